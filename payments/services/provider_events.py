"""Provider events in: what the provider's signed event says, stored once and recorded as a fact.

The view (payments/webhooks.py) verifies the Standard Webhooks signature over the raw body; this
module stores the event under its `webhook-id` and applies it in one database transaction, so a
duplicate (the same id, sent again or concurrently) finds the stored event and changes nothing.

An event is a provider's fact, never the answer to a claim's call: it is recorded through
`settle` / `settle_refund` with a claim that owns no row (`EVENT_CLAIM`), which the fence lets
record only the facts (a success or a decline), whatever the row's state: a success after a
cancel is recorded and flagged there, a final state never moves (the transition table has no
such move), and "not charged" is never concluded from an event. What an event cannot place (no
row has its key, another amount, currency or provider id, a status that is not its type's, an
unknown type) changes no status: an unknown charge it names becomes due for reconcile_payments
at once (`lookup_requested_at`), and the event is stored and logged.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.events import log_event
from payments.models import ProviderEvent, Refund, Transaction
from payments.provider import Outcome, ProviderResult
from payments.services.refund_settlement import settle_refund
from payments.services.settlement import settle
from payments.transitions import Actor

logger = logging.getLogger("payments.services")  # one logger name for all the services

Effect = ProviderEvent.Effect

# type -> (what it is about, the status its data must have, the fact it reports)
EVENT_TYPES: dict[str, tuple[str, str, Outcome]] = {
    "charge.succeeded": ("charge", "succeeded", Outcome.SUCCEEDED),
    "charge.declined": ("charge", "declined", Outcome.DECLINED),
    "refund.succeeded": ("refund", "succeeded", Outcome.SUCCEEDED),
    "refund.failed": ("refund", "failed", Outcome.DECLINED),
}
PROVIDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SAFE_CODE = re.compile(r"[a-z0-9_]{1,64}")

# A claim token no claim ever holds (claims write 32 hex digits): a settle with it owns no row,
# so the fence lets it record the provider's facts and nothing else.
EVENT_CLAIM = "provider-event"


@dataclass(frozen=True)
class Received:
    """What receiving one verified event did: `effect` (ProviderEvent.Effect), `duplicate`
    (already stored under this id: nothing changed), `detail` (why, in words)."""

    effect: str
    duplicate: bool
    detail: str


def provider_event_receive(*, webhook_id: str, sent_at: datetime, body: Any) -> Received:
    """Store the event under `webhook_id` and apply it, in one database transaction."""
    event_type = body.get("type") if isinstance(body, dict) else None
    with transaction.atomic():
        try:
            with transaction.atomic():
                event = ProviderEvent.objects.create(
                    webhook_id=webhook_id,
                    type=str(event_type or "")[:64],
                    sent_at=sent_at,
                    payload=body if isinstance(body, dict) else {},
                    effect=Effect.UNPLACED,
                )
        except IntegrityError:
            duplicate = True
        else:
            duplicate = False
            fields = _apply(event, body)
            event.save(update_fields=["effect", "detail", "transaction", "refund"])
    if duplicate:
        stored = ProviderEvent.objects.filter(webhook_id=webhook_id).first()
        log_event(
            logger,
            "provider.event_duplicate",
            message=f"Provider event {webhook_id} was already received: nothing changed",
            webhook_id=webhook_id,
            event_type=str(event_type or ""),
        )
        return Received(stored.effect if stored else Effect.UNCHANGED, True, "already received")
    _log_received(event, fields)
    return Received(event.effect, False, event.detail)


def _apply(event: ProviderEvent, body: Any) -> dict[str, Any]:
    """Place the event on its row and record it; sets event.effect and event.detail. The
    fields to log."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        event.detail = "not an event: the body is no JSON object with a data object"
        return {}
    key = data.get("idempotency_key")
    kind, status, outcome = EVENT_TYPES.get(event.type, ("", "", None))
    row: Transaction | Refund | None = None
    if isinstance(key, str) and key:
        if kind in ("charge", ""):
            row = Transaction.objects.filter(provider_idempotency_key=key).first()
        if row is None and kind in ("refund", ""):
            row = Refund.objects.filter(provider_idempotency_key=key).first()
    if row is None:
        event.detail = f"no {kind or 'charge or refund'} of ours has the idempotency key {str(key)[:64]!r}"
        return {"idempotency_key": str(key)[:64]}
    if isinstance(row, Refund):
        event.refund, event.transaction = row, row.transaction
    else:
        event.transaction = row
    fields = _row_fields(row)
    problem = _misfit(event.type, status, data, row)
    if problem or outcome is None:
        event.effect = Effect.LOOKUP
        event.detail = f"{problem or f'unknown event type {event.type!r}'}; {_ask_lookup(row)}"[:500]
        return fields
    if isinstance(row, Refund):
        _apply_refund(event, row, data, outcome)
    else:
        _apply_charge(event, row, data, outcome)
    return _row_fields(event.refund or event.transaction)


def _misfit(event_type: str, status: str, data: dict[str, Any], row: Transaction | Refund) -> str:
    """Why the event's data is not about `row` as it is, or "" when it fits."""
    amount, currency, provider_id = data.get("amount"), data.get("currency"), data.get("id")
    known_id = row.provider_refund_id if isinstance(row, Refund) else row.provider_charge_id
    if not status:
        return ""
    if data.get("status") != status:
        return f"a {event_type} event with status {str(data.get('status'))[:32]!r}"
    if type(amount) is not int or amount != row.amount:
        return f"amount {str(amount)[:32]}, ours {row.amount}"
    if not isinstance(currency, str) or currency.upper() != row.currency:
        return f"currency {str(currency)[:8]}, ours {row.currency}"
    if not isinstance(provider_id, str) or not PROVIDER_ID.fullmatch(provider_id):
        return "the provider id is missing or malformed"
    if known_id and known_id != provider_id:
        return f"provider id {provider_id}, ours {known_id}"
    return ""


def _ask_lookup(row: Transaction | Refund) -> str:
    """Mark the row for a lookup, as far as a lookup will come for it: no status changes."""
    if isinstance(row, Refund):
        if row.status in (Refund.Status.UNKNOWN, Refund.Status.PENDING):
            return "reconcile_refunds looks it up at its next run"
        return f"the refund is {row.status}: nothing is looked up"
    if Transaction.objects.filter(pk=row.pk, status=Transaction.Status.UNKNOWN).update(
        lookup_requested_at=timezone.now()
    ):
        return "due for reconcile_payments now"
    if row.status == Transaction.Status.PENDING:
        return "a request is working on it: its own answer settles it"
    if row.status == Transaction.Status.FAILED:
        return "failed: a retry sends the same key and hears the provider's own answer"
    return f"the charge is {row.status}: nothing is looked up"


def _apply_charge(event: ProviderEvent, row: Transaction, data: dict[str, Any], outcome: Outcome) -> None:
    locked = Transaction.objects.select_for_update().get(pk=row.pk)
    before = locked.status
    decline_code = data.get("decline_code")
    result = ProviderResult(
        outcome=outcome,
        charge_id=data["id"],
        code=decline_code
        if isinstance(decline_code, str) and SAFE_CODE.fullmatch(decline_code)
        else "card_declined",
        message="The provider reported the charge declined.",
    )
    claimed = Transaction(pk=row.pk, claim_token=EVENT_CLAIM)
    settled = settle(claimed=claimed, result=result, by=Actor.PROVIDER, kind="event")
    event.transaction = settled
    _conclude(event, before, settled.status, outcome, succeeded=Transaction.Status.SUCCEEDED)


def _apply_refund(event: ProviderEvent, row: Refund, data: dict[str, Any], outcome: Outcome) -> None:
    locked = Refund.objects.select_for_update().get(pk=row.pk)
    before = locked.status
    result = ProviderResult(
        outcome=outcome,
        refund_id=data["id"],
        code="refund_failed",
        message="The provider reported the refund failed.",
    )
    claimed = Refund(pk=row.pk, claim_token=EVENT_CLAIM)
    settled = settle_refund(claimed=claimed, result=result, by=Actor.PROVIDER, kind="event")
    event.refund = settled
    _conclude(event, before, settled.status, outcome, succeeded=Refund.Status.SUCCEEDED)


def _conclude(event: ProviderEvent, before: str, after: str, outcome: Outcome, *, succeeded: str) -> None:
    if after != before:
        event.effect, event.detail = Effect.APPLIED, f"{before} -> {after}"
        return
    event.effect = Effect.UNCHANGED
    contradicts = (after == succeeded) != (outcome == Outcome.SUCCEEDED) and after in (
        "succeeded",
        "declined",
        "failed",
    )
    event.detail = (
        f"contradicts the final {after}: nothing changed"
        if contradicts
        else f"already {after}: nothing changed"
    )


def _row_fields(row: Transaction | Refund | None) -> dict[str, Any]:
    if isinstance(row, Refund):
        return {"refund_id": str(row.pk), "transaction_id": str(row.transaction_id), "status": row.status}
    if isinstance(row, Transaction):
        return {"transaction_id": str(row.pk), "status": row.status}
    return {}


def _log_received(event: ProviderEvent, fields: dict[str, Any]) -> None:
    common = {"webhook_id": event.webhook_id, "event_type": event.type, "effect": event.effect, **fields}
    if event.effect == Effect.APPLIED:
        log_event(
            logger, "provider.event_applied", message=f"Provider event {event.type}: {event.detail}", **common
        )
    elif event.effect == Effect.UNCHANGED and event.detail.startswith("contradicts"):
        log_event(
            logger,
            "provider.event_contradicted",
            level=logging.ERROR,
            message=f"Provider event {event.type} {event.detail}; support should look",
            **common,
        )
    elif event.effect == Effect.UNCHANGED:
        log_event(
            logger,
            "provider.event_unchanged",
            message=f"Provider event {event.type}: {event.detail}",
            **common,
        )
    elif event.effect == Effect.LOOKUP:
        log_event(
            logger,
            "provider.event_lookup",
            level=logging.WARNING,
            message=f"Provider event {event.type} could not be placed ({event.detail})",
            **common,
        )
    else:
        log_event(
            logger,
            "provider.event_unplaced",
            level=logging.WARNING,
            message=f"Provider event {event.type or '(no type)'} could not be placed: {event.detail}",
            **common,
        )
