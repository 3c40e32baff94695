"""bench/floor.py, the raw floor the benchmark measures the service against, answers a charge as
the service would: served by gunicorn over loopback, against the test database and the fake
provider, with the same tables (so its figures are those of the same work)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from apikeys.models import APIKey
from bench.infra import FloorGunicorn
from fakeprovider import FakeProvider
from payments.models import PaymentAttempt, Transaction
from tests.support.service import TEST_API_KEY, database_url_for_subprocess, requires_pooled_mysql

pytestmark = [requires_pooled_mysql, pytest.mark.django_db(transaction=True)]

BODY = {"amount": 1999, "currency": "USD", "source": "tok_visa", "description": "floor"}


@pytest.fixture
def floor(fake_provider: FakeProvider, tmp_path: Path) -> Iterator[FloorGunicorn]:
    env = {
        **os.environ,
        "FLOOR_DATABASE_URL": database_url_for_subprocess(),
        "PAYMENT_SERVICE_URL": fake_provider.url,
        "PAYMENT_API_KEY": TEST_API_KEY,
    }
    with FloorGunicorn(env=env, log_path=tmp_path / "floor.log", workers=1) as server:
        yield server


@pytest.fixture
def key() -> str:
    user = get_user_model().objects.create_user("floor-client")
    return APIKey.objects.issue(user, "floor")[1]


def post(floor: FloorGunicorn, body: object, *, key: str, idempotency_key: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{floor.url}/api/v1/charges",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Authorization": f"Token {key}",
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_charge_is_made_once_recorded_with_its_attempt_and_replayed(
    floor: FloorGunicorn, key: str, fake_provider: FakeProvider
) -> None:
    status, answer = post(floor, BODY, key=key, idempotency_key="order-1")

    assert status == 201
    assert answer["status"] == "succeeded"
    assert (answer["amount"], answer["currency"], answer["source"]) == (1999, "USD", "tok_…visa")
    row = Transaction.objects.get(pk=answer["id"])
    assert (row.status, row.attempts, row.claim_token, row.idempotency_key) == ("succeeded", 1, "", "order-1")
    assert row.provider_charge_id
    assert set(fake_provider.ledger()) == {row.provider_idempotency_key}
    assert fake_provider.ledger()[row.provider_idempotency_key]["reference"] == str(row.pk)
    attempt = PaymentAttempt.objects.get(transaction=row)
    assert (attempt.number, attempt.kind, attempt.http_status, attempt.reached_provider) == (
        1,
        "charge",
        200,
        True,
    )

    assert post(floor, BODY, key=key, idempotency_key="order-1") == (201, answer)
    assert Transaction.objects.count() == 1
    assert fake_provider.request_count(row.provider_idempotency_key) == 1


def test_a_bad_key_or_body_is_refused_and_writes_nothing(floor: FloorGunicorn, key: str) -> None:
    assert post(floor, BODY, key=key[:8] + ".not-the-secret", idempotency_key="order-2")[0] == 401
    assert post(floor, {**BODY, "amount": "1999"}, key=key, idempotency_key="order-3")[0] == 400
    assert post(floor, {**BODY, "extra": 1}, key=key, idempotency_key="order-4")[0] == 400
    assert not Transaction.objects.exists()
