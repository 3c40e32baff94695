"""A GET of a charge whose outcome is unknown asks the provider, at most once per charge per
PAYMENT_LOOKUP_ON_READ_S: the client polling learns the outcome as soon as the provider has it."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments import provider
from payments.models import PaymentAttempt, Transaction

pytestmark = pytest.mark.django_db(transaction=True)

CHARGE = {"amount": 1999, "currency": "USD", "source": "tok_visa"}


def unknown_charge(api: APIClient, fake_provider: FakeProvider, settings: Any) -> str:
    """A charge the provider made, whose every answer was lost: unknown to the service."""
    settings.PAYMENT_MAX_RETRIES = 0
    fake_provider.inject({"kind": "drop_after"})
    response = api.post("/api/v1/charges", CHARGE, format="json")
    assert response.status_code == 504, response.content
    return response.json()["transaction"]["id"]


def a_while_later(charge_id: str, seconds: int = 10) -> None:
    """As if the charge's last claim (its call) was taken `seconds` ago."""
    from datetime import timedelta

    from django.utils import timezone

    Transaction.objects.filter(pk=charge_id).update(claimed_at=timezone.now() - timedelta(seconds=seconds))


def lookups(charge_id: str) -> int:
    return PaymentAttempt.objects.filter(transaction_id=charge_id, kind="lookup").count()


def test_reading_an_unknown_charge_the_provider_made_settles_it_at_once(
    api: APIClient, fake_provider: FakeProvider, settings: Any
) -> None:
    charge_id = unknown_charge(api, fake_provider, settings)
    assert api.get(f"/api/v1/charges/{charge_id}").json()["status"] == "unknown", "just sent: not yet"
    assert lookups(charge_id) == 0
    a_while_later(charge_id)

    body = api.get(f"/api/v1/charges/{charge_id}").json()

    assert (body["status"], body["next_step"]["action"]) == ("succeeded", "none")
    assert lookups(charge_id) == 1
    assert fake_provider.charge_count(Transaction.objects.get(pk=charge_id).provider_idempotency_key) == 1


def test_many_reads_make_one_lookup_per_interval_and_absence_proves_nothing_yet(
    api: APIClient, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    fake_provider.inject({"kind": "drop_before"})  # never reached the provider's ledger
    charge_id = api.post("/api/v1/charges", CHARGE, format="json").json()["transaction"]["id"]
    assert Transaction.objects.get(pk=charge_id).status == "unknown"
    a_while_later(charge_id)

    for _ in range(5):
        assert api.get(f"/api/v1/charges/{charge_id}").json()["status"] == "unknown"

    assert lookups(charge_id) == 1, "one lookup in the interval, however many reads"
    settings.PAYMENT_LOOKUP_ON_READ_S = 0
    api.get(f"/api/v1/charges/{charge_id}")
    assert lookups(charge_id) == 1, "0 turns it off"


def test_no_lookup_while_the_breaker_is_open(
    api: APIClient, fake_provider: FakeProvider, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    charge_id = unknown_charge(api, fake_provider, settings)
    breaker = provider.get_client().breaker
    monkeypatch.setattr(breaker, "failure_threshold", 1)
    breaker.record_failure()
    a_while_later(charge_id)

    response = api.get(f"/api/v1/charges/{charge_id}")

    assert response.status_code == 200 and response.json()["status"] == "unknown"
    assert lookups(charge_id) == 0
