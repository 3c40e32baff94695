"""The charge path inserts first and looks a key up only when it must: a key already used is
still replayed when the provider cannot take a call (breaker open, every slot taken)."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments import provider
from payments.models import Transaction

CHARGE = {"amount": 1999, "currency": "USD", "source": "tok_visa", "description": "Order 1"}


def post(api: APIClient, key: str, **body: Any) -> Any:
    return api.post("/api/v1/charges", {**CHARGE, **body}, format="json", HTTP_IDEMPOTENCY_KEY=key)


def open_breaker() -> None:
    breaker = provider.get_client().breaker
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()


def test_a_completed_key_is_replayed_while_the_breaker_is_open(
    api: APIClient, fake_provider: FakeProvider
) -> None:
    first = post(api, "order-1")
    open_breaker()

    replayed = post(api, "order-1")
    refused = post(api, "order-2")

    assert (first.status_code, replayed.status_code) == (201, 201)
    assert replayed.json()["id"] == first.json()["id"]
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "circuit_open")
    assert Transaction.objects.count() == 1, "the refused charge kept nothing"
    assert fake_provider.total_charges() == 1


def test_a_completed_key_is_replayed_with_every_slot_taken(
    api: APIClient, fake_provider: FakeProvider, settings: Any
) -> None:
    first = post(api, "order-1")
    settings.PAYMENT_SLOT_WAIT_MS = 10_000  # the replay must not wait for a slot
    resilience = provider.get_client().resilience
    taken = 0
    while resilience._slots.acquire(blocking=False):
        taken += 1
    try:
        replayed = post(api, "order-1")
        reused = post(api, "order-1", amount=1)
    finally:
        for _ in range(taken):
            resilience._slots.release()

    assert replayed.status_code == 201 and replayed.json()["id"] == first.json()["id"]
    assert (reused.status_code, reused.json()["error"]["code"]) == (409, "idempotency_key_reused")
    assert fake_provider.total_charges() == 1
