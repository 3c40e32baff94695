"""The outbox: an event per state change a client is told of, written in that change's transaction."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import DatabaseError
from django.utils import timezone
from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments import failpoints, services
from payments.models import ClientEvent, EventDelivery, Transaction, WebhookEndpoint
from payments.services import claims
from payments.transitions import Actor
from tests.support.factories import charge, failed, shop

pytestmark = pytest.mark.django_db(transaction=True)

ALL_TYPES = list(services.client_events.EVENT_TYPES)


def events_of(txn: Transaction) -> list[str]:
    return list(
        ClientEvent.objects.filter(transaction=txn).order_by("created_at").values_list("type", flat=True)
    )


def endpoint(client: Any, *, events: list[str] = ALL_TYPES, **fields: Any) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(
        client=client, url="http://127.0.0.1:9/hook", events=events, **fields
    )


def test_a_success_writes_one_event_whose_object_is_the_charge_as_the_api_shows_it(
    api: APIClient, api_user_token: tuple[Any, str]
) -> None:
    user, _ = api_user_token
    created = api.post(
        "/api/v1/charges", {"amount": 1999, "currency": "USD", "source": "tok_visa"}, format="json"
    )
    assert created.status_code == 201
    txn = Transaction.objects.get(pk=created.json()["id"])

    (event,) = ClientEvent.objects.filter(transaction=txn)
    assert event.type == "charge.succeeded" and event.client == user
    assert set(event.payload) == {"id", "type", "created", "data"}
    assert event.payload["id"] == event.id and event.id.startswith("evt_")
    assert event.payload["data"]["object"] == created.json()


def test_decline_cancel_and_review_are_events_and_a_retry_scheduled_is_none(settings: Any) -> None:
    assert events_of(charge("tok_chargeDeclined")) == ["charge.declined"]

    settings.PAYMENT_MAX_RETRIES = 0
    scheduled = charge("tok_error")  # failed, a retry scheduled: no event
    assert scheduled.status == Transaction.Status.FAILED and events_of(scheduled) == []
    services.charge_cancel(transaction_id=scheduled.pk, reason="customer left", actor="alice")
    assert events_of(scheduled) == ["charge.canceled"]

    settings.PAYMENT_MAX_ATTEMPTS = 1
    exhausted = charge("tok_error")
    assert exhausted.review_reason and events_of(exhausted) == ["charge.needs_review"]


def test_flag_exhausted_is_a_needs_review_event(settings: Any) -> None:
    txn = failed(attempts=3)
    settings.PAYMENT_MAX_ATTEMPTS = 2
    assert services.flag_exhausted() == 1
    assert events_of(txn) == ["charge.needs_review"]
    assert services.flag_exhausted() == 0 and events_of(txn) == ["charge.needs_review"]


def test_a_refund_writes_its_event(fake_provider: FakeProvider) -> None:
    txn = charge("tok_visa")
    refunded = services.refund_create(
        charge_id=txn.pk,
        client=txn.client,
        request=services.RefundRequest(reason="requested_by_customer"),
        idempotency_key=None,
        by=Actor.CLIENT,
        requested_by="shop",
    )
    (event,) = ClientEvent.objects.filter(refund=refunded.refund)
    assert event.type == "refund.succeeded"
    assert event.payload["data"]["object"]["id"] == str(refunded.refund.pk)
    assert event.payload["data"]["object"]["object"] == "refund"


def test_deliveries_are_numbered_per_endpoint_for_the_types_it_takes() -> None:
    client = shop()
    both, declines = endpoint(client), endpoint(client, events=["charge.declined"])
    endpoint(client, enabled=False)
    endpoint(shop("other"))
    charge("tok_visa", client=client)
    charge("tok_chargeDeclined", client=client)

    assert list(both.deliveries.values_list("sequence", "event__type")) == [
        (1, "charge.succeeded"),
        (2, "charge.declined"),
    ]
    assert list(declines.deliveries.values_list("sequence", "event__type")) == [(1, "charge.declined")]
    assert EventDelivery.objects.count() == 3


def test_a_settle_that_rolls_back_writes_no_event() -> None:
    client = shop()
    hook = endpoint(client)

    def fail() -> None:
        raise DatabaseError("the database went away after the event was written")

    with failpoints.armed("client_event.written", fail):
        txn = charge("tok_visa", client=client)

    assert txn.status != Transaction.Status.SUCCEEDED, "the change rolled back with its event"
    assert ClientEvent.objects.count() == 0 and EventDelivery.objects.count() == 0
    assert WebhookEndpoint.objects.get(pk=hook.pk).last_sequence == 0

    hour_ago = timezone.now() - timedelta(hours=1)  # its process died, as far as reconcile can tell
    Transaction.objects.filter(pk=txn.pk).update(claimed_at=hour_ago, charge_started_at=hour_ago)
    result = services.charge_reconcile(transaction_id=txn.pk, actor="alice")
    assert result.status == Transaction.Status.SUCCEEDED
    assert events_of(txn) == ["charge.succeeded"]
    assert list(hook.deliveries.values_list("sequence", flat=True)) == [1]


def test_a_command_error_mid_charge_flags_the_row_with_a_needs_review_event() -> None:
    txn = failed()
    claimed = claims.claim(Transaction.objects.filter(pk=txn.pk), by=Actor.RETRY, for_charge=True)
    assert claimed is not None
    claimed.charge_sent = True  # as if the provider was being called when the error came

    def broken(row: Transaction, *, actor: str) -> Any:
        raise RuntimeError("a bug")

    result = claims.isolated(claimed, "test", broken, by=Actor.RETRY)

    assert result.outcome == services.ActionOutcome.ERROR
    row = Transaction.objects.get(pk=txn.pk)
    assert row.status == Transaction.Status.UNKNOWN and row.needs_review
    assert events_of(txn) == ["charge.needs_review"]
    assert ClientEvent.objects.get(transaction=txn).payload["data"]["object"]["needs_review"] is True
