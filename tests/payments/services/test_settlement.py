"""settle on the charge path's own row: the answer written without a re-read while the row is as
inserted, and read under its lock once anything changed it."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments import failpoints
from payments.models import ClientEvent, PaymentAttempt, Transaction
from payments.provider import Outcome, ProviderResult
from payments.services import settlement
from payments.transitions import Actor

CHARGE = {"amount": 1999, "currency": "USD", "source": "tok_visa", "description": "Order 1"}


def post(api: APIClient, key: str) -> Any:
    return api.post("/api/v1/charges", CHARGE, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_a_new_keyed_charge_reads_no_row_it_wrote(api: APIClient, fake_provider: FakeProvider) -> None:
    with CaptureQueriesContext(connection) as queries:
        response = post(api, "order-1")

    assert response.status_code == 201
    statements = [q["sql"] for q in queries.captured_queries]
    reads = [sql for sql in statements if sql.startswith("SELECT")]
    assert not [sql for sql in reads if "payments_transaction" in sql.split(" WHERE ")[0]], reads
    assert not [sql for sql in reads if "COUNT(" in sql or "FOR UPDATE" in sql], reads
    q = connection.ops.quote_name  # backticks on MariaDB, double quotes on SQLite
    updates = [sql for sql in statements if sql.startswith(f"UPDATE {q('payments_transaction')}")]
    assert (
        len(updates) == 1
        and f"{q('claim_token')} = " in updates[0]
        and f"{q('status')} = 'pending'" in updates[0]
    )
    txn = Transaction.objects.get(pk=response.json()["id"])
    assert (txn.status, txn.attempts, txn.source) == ("succeeded", 1, "")
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1
    assert list(PaymentAttempt.objects.filter(transaction=txn).values_list("number", "outcome")) == [
        (1, "succeeded")
    ]
    event = ClientEvent.objects.get(transaction=txn)
    assert event.type == "charge.succeeded"
    assert event.payload["data"]["object"]["status"] == "succeeded"
    assert event.payload["data"]["object"]["amount_refunded"] == 0


def test_a_row_settled_by_a_provider_event_during_the_call_is_read_under_its_lock(
    api: APIClient, fake_provider: FakeProvider
) -> None:
    def provider_event_first() -> None:
        row = Transaction.objects.get(idempotency_key="order-2")
        event_claim = Transaction(pk=row.pk, claim_token="event")  # no claim holds it: facts only
        success = ProviderResult(outcome=Outcome.SUCCEEDED, charge_id="ch_from_event")
        settlement.settle(claimed=event_claim, result=success, by=Actor.PROVIDER, kind="event")

    with failpoints.armed("charge.after_call", provider_event_first):
        response = post(api, "order-2")

    assert response.status_code == 201
    txn = Transaction.objects.get(pk=response.json()["id"])
    assert (txn.status, txn.provider_charge_id) == ("succeeded", "ch_from_event")
    assert txn.attempts == 1, "the claim's try counts: the token is still its own"
    assert list(PaymentAttempt.objects.filter(transaction=txn).values_list("number", flat=True)) == [1]
    assert list(ClientEvent.objects.filter(transaction=txn).values_list("type", flat=True)) == [
        "charge.succeeded"
    ]


def test_a_row_flagged_during_the_call_keeps_what_the_answer_is_read_against(
    api: APIClient, fake_provider: FakeProvider
) -> None:
    """A field the answer reads changed under the claim: the fenced UPDATE misses, and the row
    read under its lock decides (here a decline, which clears the flag as it always did)."""

    def flag() -> None:
        Transaction.objects.filter(idempotency_key="order-3").update(review_reason="a person looks")

    with failpoints.armed("charge.after_call", flag):
        response = api.post(
            "/api/v1/charges",
            {**CHARGE, "source": "tok_chargeDeclined"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="order-3",
        )

    assert response.status_code == 402
    txn = Transaction.objects.get(idempotency_key="order-3")
    assert (txn.status, txn.attempts, txn.review_reason) == ("declined", 1, "")
    assert list(ClientEvent.objects.filter(transaction=txn).values_list("type", flat=True)) == [
        "charge.declined"
    ]
