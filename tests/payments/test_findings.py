"""One regression test per finding of the exactly-once review (issue 10), each a path that broke
"never charged twice, never lost, never told 'not charged' when unknown" before the fix."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError
from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments import failpoints, services
from payments.models import Transaction
from payments.services import ActionOutcome
from tests.support.factories import unknown

pytestmark = pytest.mark.django_db(transaction=True)

CHARGE = {"amount": 1999, "currency": "USD", "source": "tok_visa"}


def post(api: APIClient, key: str | None = None, **body: Any) -> Any:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return api.post("/api/v1/charges", {**CHARGE, **body}, format="json", **headers)


def test_1_a_409_after_a_timeout_keeps_the_outcome_unknown(
    api: APIClient, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    fake_provider.inject({"kind": "slow", "ms": 1500})  # the provider is still processing
    first = post(api, key="order-409")
    second = post(api, key="order-409")  # the caller retries at once, as invited

    assert (first.status_code, first.json()["error"]["code"]) == (504, "provider_timeout")
    assert second.status_code == 504, "a 409 for a key in flight proves nothing"
    txn = Transaction.objects.get()
    assert (txn.status, txn.error_type) == ("unknown", "outcome_unknown")
    with pytest.raises(Exception, match="reconcile it first"):
        services.charge_cancel(transaction_id=txn.pk, reason="duplicate", actor="support")


def test_2_a_connection_dropped_after_sending_is_an_unknown_outcome(
    api: APIClient, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    fake_provider.inject({"kind": "drop_after"})

    response = post(api)

    assert (response.status_code, response.json()["error"]["code"]) == (504, "connection_dropped")
    assert fake_provider.total_charges() == 1, "the provider did charge"
    assert Transaction.objects.get().status == "unknown"


def test_3_reconcile_while_an_attempt_may_be_in_flight_proves_nothing(fake_provider: FakeProvider) -> None:
    txn = unknown(age=timedelta(seconds=0))

    result = services.charge_reconcile(transaction_id=txn.pk, actor="support")

    assert result.outcome == ActionOutcome.UNKNOWN
    assert Transaction.objects.get(pk=txn.pk).status == "unknown"


def test_4_a_database_failure_after_the_provider_call_answers_unknown_never_busy(
    api: APIClient, fake_provider: FakeProvider
) -> None:
    def fail() -> None:
        raise OperationalError("connection lost")

    with failpoints.armed("settle", fail):
        response = post(api, key="order-db")

    body = response.json()
    assert (response.status_code, body["error"]["type"], body["error"]["code"]) == (
        504,
        "outcome_unknown",
        "settle_failed",
    )
    assert body["transaction"]["id"], "the caller learns which payment is being verified"
    assert fake_provider.total_charges() == 1
    # The same key later gets the charge, never a second one.
    Transaction.objects.filter(pk=body["transaction"]["id"]).update(
        claimed_at=Transaction.objects.get().claimed_at - timedelta(seconds=10)
    )
    assert post(api, key="order-db").status_code == 201
    assert fake_provider.total_charges() == 1


def test_5_a_breaker_refusal_at_the_call_keeps_nothing(api: APIClient, fake_provider: FakeProvider) -> None:
    # The breaker opens between the pre-check and the call: simulated by opening it at the failpoint.
    def open_breaker() -> None:
        from payments import provider

        breaker = provider.get_client().breaker
        for _ in range(breaker.failure_threshold):
            breaker.record_failure()

    with failpoints.armed("charge.before_call", open_breaker):
        response = post(api, key="order-breaker")

    assert (response.status_code, response.json()["error"]["code"]) == (503, "circuit_open")
    assert response.json()["transaction"] is None
    assert not Transaction.objects.exists(), "nothing a command could charge later"


def test_5_a_502_says_when_the_service_retries_and_how_to_stop_it(
    api: APIClient, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    response = post(api, source="tok_error")

    body = response.json()
    assert response.status_code == 502
    assert body["transaction"]["next_step"]["action"] == "retry"
    assert body["transaction"]["next_retry_at"]
    assert "cancel" in body["error"]["message"].lower()
    assert api.post(f"/api/v1/charges/{body['transaction']['id']}/cancel").status_code == 200


def test_6_idempotency_keys_differing_only_in_case_are_two_payments(
    api: APIClient, fake_provider: FakeProvider
) -> None:
    first = post(api, key="order-Ab")
    second = post(api, key="order-aB")

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    assert "Idempotent-Replayed" not in second
    assert fake_provider.total_charges() == 2


def test_7_an_overlong_charge_id_is_an_unknown_outcome_not_a_crash(
    api: APIClient, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    fake_provider.inject({"kind": "garbage", "variant": "long_id"})

    response = post(api)

    assert (response.status_code, response.json()["error"]["code"]) == (504, "unusable_answer")
    assert Transaction.objects.get().status == "unknown"


def test_8_deeply_nested_json_is_a_400_not_a_crash(api: APIClient) -> None:
    response = api.generic("POST", "/api/v1/charges", "[" * 50_000, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request"


def test_9_lowering_the_attempt_limit_never_leaves_a_retry_that_never_comes(settings: Any) -> None:
    from tests.support.factories import failed

    txn = failed(attempts=4)
    settings.PAYMENT_MAX_ATTEMPTS = 3

    services.flag_exhausted()

    assert Transaction.objects.get(pk=txn.pk).needs_review


def test_10_a_reconcile_window_shorter_than_the_slowest_charge_stops_start_up() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_READ_ENV_FILE": "false",
        "DJANGO_DEBUG": "true",
        "PAYMENT_SERVICE_URL": "http://127.0.0.1:9/v1/charges",
        "PAYMENT_API_KEY": "sk_test",
        "PAYMENT_DEADLINE_MS": "10000",
        "PAYMENT_RECONCILE_AFTER_S": "12",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode != 0
    assert "PAYMENT_RECONCILE_AFTER_S='12' is invalid" in done.stderr
    assert "18 s" in done.stderr  # 10 s deadline + 3 s connect + 5 s read timeout


@pytest.mark.parametrize("key", ["", " ", "two words"])
def test_11_an_empty_or_spaced_idempotency_key_is_refused(api: APIClient, key: str) -> None:
    response = post(api, key=key)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["fields"]
    assert not Transaction.objects.exists()


def test_13_a_provider_400_is_told_apart_from_a_card_decline(
    api: APIClient, fake_provider: FakeProvider
) -> None:
    fake_provider.inject({"kind": "status", "status": 400})

    response = post(api)

    assert (response.status_code, response.json()["error"]["type"]) == (422, "provider_rejected")
    assert "decline_code" not in response.json()["error"]


def test_the_last_request_id_ties_a_payment_to_its_log_lines(
    api: APIClient, fake_provider: FakeProvider
) -> None:
    response = api.post(
        "/api/v1/charges",
        CHARGE,
        format="json",
        HTTP_IDEMPOTENCY_KEY="order-rid",
        HTTP_X_REQUEST_ID="req-support-1",
    )

    assert response["X-Request-ID"] == "req-support-1"
    assert Transaction.objects.get(pk=response.json()["id"]).last_request_id == "req-support-1"


def test_raw_exception_text_stored_by_older_versions_is_scrubbed() -> None:
    from importlib import import_module

    from django.apps import apps

    from tests.support.factories import failed

    raw = "HTTPConnectionPool(host='10.0.0.7', port=443): Max retries exceeded with url: /v1/charges"
    txn = failed(error_message=raw)
    kept = failed(error_message="HTTP 503")

    import_module("payments.migrations.0004_last_request_id").scrub(apps, None)

    assert "10.0.0.7" not in Transaction.objects.get(pk=txn.pk).error_message
    assert Transaction.objects.get(pk=kept.pk).error_message == "HTTP 503"
