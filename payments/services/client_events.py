"""Events out, written: the outbox row of a state change, and its deliveries, in the caller's
database transaction (the one that changes the state), so that an event is written if and
only if its change is.

The event's `data.object` is the charge or refund as the API shows it at that moment: a
snapshot, rendered when the event is written, so a delivery sent an hour later still says what
happened then. The API's serializers render it; this layer may not import the API, so
payments.apps registers them here at start-up (`register_renderer`) and the services only call
`render`. One representation, the API's, and no second copy of it to drift.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import F
from django.db.models.query import RawQuerySet
from django.utils import timezone

from core.db import db_value, select_sql
from payments import failpoints
from payments.models import ClientEvent, EventDelivery, Refund, Transaction, WebhookEndpoint
from payments.models.client_events import new_event_id

# Every type an event can have, and what it says (README's "Events out" lists them).
EVENT_TYPES: dict[str, str] = {
    "charge.succeeded": "the charge succeeded (also a late success, after an unknown outcome or a cancel)",
    "charge.declined": "the charge was declined: final",
    "charge.canceled": "the charge was given up on, never to be sent again",
    "charge.needs_review": "a person must decide about the charge (tries ran out, or an answer did not fit)",
    "refund.succeeded": "the refund was made",
    "refund.failed": "the refund was not made (its error says whether it may be sent again)",
}

_RENDERERS: dict[str, Callable[[Any], Any]] = {}


def register_renderer(kind: str, render: Callable[[Any], Any]) -> None:
    """How an event shows a `kind` ("charge", "refund") object: the API's serializer."""
    _RENDERERS[kind] = render


def render(kind: str, row: Any) -> dict[str, Any]:
    renderer = _RENDERERS.get(kind)
    if renderer is None:
        raise ImproperlyConfigured(f"no renderer for {kind} events (payments.apps registers them)")
    return json.loads(json.dumps(renderer(row), cls=DjangoJSONEncoder))


def charge_event_type(txn: Transaction, *, before_status: str, before_review: bool) -> str | None:
    """The event a charge's change is, if it is one a client is told of."""
    if txn.status != before_status:
        if txn.status == Transaction.Status.SUCCEEDED:
            return "charge.succeeded"
        if txn.status == Transaction.Status.DECLINED:
            return "charge.declined"
        if txn.status == Transaction.Status.CANCELED:
            return "charge.canceled"
    if txn.needs_review and not before_review:
        return "charge.needs_review"
    return None


def refund_event_type(row: Refund, *, before_status: str) -> str | None:
    if row.status == before_status:
        return None
    return {Refund.Status.SUCCEEDED: "refund.succeeded", Refund.Status.FAILED: "refund.failed"}.get(
        row.status
    )


def record_charge_change(txn: Transaction, *, before_status: str, before_review: bool) -> ClientEvent | None:
    """Write the charge's event, if its change is one (call it inside the change's transaction,
    after the row is saved)."""
    event_type = charge_event_type(txn, before_status=before_status, before_review=before_review)
    if event_type is None:
        return None
    return record(event_type, client_id=txn.client_id, obj=render("charge", txn), transaction_id=txn.pk)


def record_refund_change(row: Refund, *, before_status: str) -> ClientEvent | None:
    event_type = refund_event_type(row, before_status=before_status)
    if event_type is None:
        return None
    return record(
        event_type,
        client_id=row.client_id,
        obj=render("refund", row),
        transaction_id=row.transaction_id,
        refund_id=row.pk,
    )


def record(
    event_type: str, *, client_id: Any, obj: dict[str, Any], transaction_id: Any, refund_id: Any = None
) -> ClientEvent:
    """The outbox row and one delivery per enabled endpoint of the client's that takes the type,
    numbered per endpoint. Each endpoint's counter is raised by an UPDATE, which locks its row
    until the caller's transaction ends (in the endpoints' order, so two never deadlock)."""
    if not connection.in_atomic_block:
        raise RuntimeError("an event is written in its state change's transaction")
    event_id, created = new_event_id(), timezone.now()
    payload = {"id": event_id, "type": event_type, "created": created.isoformat(), "data": {"object": obj}}
    event = ClientEvent.objects.create(
        id=event_id,
        client_id=client_id,
        type=event_type,
        transaction_id=transaction_id,
        refund_id=refund_id,
        payload=payload,
    )
    failpoints.hit("client_event.written")
    subscribed = [endpoint.pk for endpoint in _enabled_endpoints(client_id) if event_type in endpoint.events]
    for endpoint_id in subscribed:
        enqueue(event, endpoint_id)
    return event


def _enabled_endpoints(client_id: Any) -> RawQuerySet[WebhookEndpoint]:
    """The client's enabled endpoints in their ids' order (the order their counters are locked
    in): one statement compiled once (core.db.select_sql), as every charge's event reads them."""
    sql = select_sql(WebhookEndpoint, "WHERE t.client_id = %s AND t.enabled = %s ORDER BY t.id")
    return WebhookEndpoint.objects.raw(sql, [client_id, db_value(WebhookEndpoint, "enabled", True)])


def enqueue(
    event: ClientEvent, endpoint_id: str, *, replay_of: EventDelivery | None = None
) -> EventDelivery | None:
    """The endpoint's next delivery, of `event` (None: the endpoint is gone)."""
    if not WebhookEndpoint.objects.filter(pk=endpoint_id).update(last_sequence=F("last_sequence") + 1):
        return None
    sequence = WebhookEndpoint.objects.values_list("last_sequence", flat=True).get(pk=endpoint_id)
    return EventDelivery.objects.create(
        event=event, endpoint_id=endpoint_id, sequence=sequence, replay_of=replay_of
    )
