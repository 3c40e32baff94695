"""Recording what the provider said about a refund, under the refund's row lock.

The rules of payments.refund_transitions: a definitive answer (succeeded, failed, pending with
the provider) settles a refund that is not final, and a success even one given up on; a refund
call that ended without one leaves it unknown, unless nothing was sent. A claim that lost its
refund to another process records only the provider's facts.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from core import metrics
from core.events import log_event
from payments import failpoints, provider, refund_transitions, transitions
from payments.models import Refund
from payments.provider import Outcome, ProviderResult
from payments.refund_transitions import REFUND_TABLE
from payments.services import client_events
from payments.services.settlement import record_attempts
from payments.transitions import Actor, Event

logger = logging.getLogger("payments.services")  # one logger name for all the services

Status = Refund.Status


class RefundFenced(Exception):
    """This claim lost its refund to another process: it wrote nothing."""

    def __init__(self, row: Refund) -> None:
        super().__init__(f"refund {row.pk} is no longer this claim's")
        self.row = row


def owns(row: Refund, claimed: Refund) -> bool:
    return row.status == Status.PENDING and row.claim_token == claimed.claim_token


def fenced(row: Refund, *, what: str) -> RefundFenced:
    log_event(
        logger,
        "refund.claim_fenced",
        level=logging.WARNING,
        message=f"Another process took this refund over; {what} was not written",
        refund_id=str(row.pk),
        transaction_id=str(row.transaction_id),
        status=row.status,
        dropped=what,
    )
    return RefundFenced(row)


def refund_event(row: Refund, result: ProviderResult, *, kind: str) -> Event | None:
    """The event a provider's answer is in REFUND_TABLE; None: it changes nothing."""
    if result.mismatch and result.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED, Outcome.PENDING):
        return Event.MISMATCH
    if result.outcome == Outcome.SUCCEEDED:
        return Event.SUCCEEDED
    if result.outcome in (Outcome.DECLINED, Outcome.REJECTED):
        return Event.DECLINED
    if result.outcome == Outcome.PENDING:
        return Event.PROVIDER_PENDING
    if kind != "refund":
        return None
    if result.outcome == Outcome.NOT_FOUND:
        return Event.SEND_FAILED  # the provider has no such charge: nothing was refunded
    if result.outcome == Outcome.CONNECTION_ERROR and row.error_type != Refund.ErrorType.OUTCOME_UNKNOWN:
        return Event.SEND_FAILED  # nothing was sent, now or before
    return Event.OUTCOME_UNKNOWN  # a 5xx, 429 or 409 too: only a lookup proves "not refunded"


def settle_refund(*, claimed: Refund, result: ProviderResult, by: Actor, kind: str = "refund") -> Refund:
    """Record the attempts and the outcome in one short transaction, under the refund's row lock.

    A provider's success is a fact: recorded whatever the refund's status, and by a claim that
    lost its row too (which records nothing else, and raises RefundFenced)."""
    with transaction.atomic():
        row = Refund.objects.select_for_update().get(pk=claimed.pk)
        failpoints.hit("refund.settle")
        event = refund_event(row, result, kind=kind)
        owner = owns(row, claimed)
        if not owner and event not in transitions.FACTS:
            raise fenced(row, what=f"its {result.outcome} answer")
        record_attempts(txn=row.transaction_id, refund=row, attempts=result.attempts, kind=kind)
        previous = row.status
        if (
            kind == "refund"
            and result.attempts
            and claimed.claim_token
            and row.claim_token == claimed.claim_token
        ):
            row.attempts += 1  # this claim's call, also when an event settled it meanwhile
        target = transitions.move(row.status, event, by=by, table=REFUND_TABLE) if event else None
        if target is not None:
            _apply(row, event, target, result, previous=previous)
        row.save()
        client_events.record_refund_change(row, before_status=previous)
    if kind == "refund":
        metrics.REFUNDS.labels(refund_transitions.refund_answer_name(row)).inc()
    _log_settled(row, previous, result)
    return row


def _apply(row: Refund, event: Event | None, target: str, result: ProviderResult, *, previous: str) -> None:
    row.status = target
    if event == Event.SUCCEEDED:
        row.provider_refund_id = result.refund_id
        row.error_type, row.error_code, row.error_message = "", "", ""
        given_up = previous in (Status.FAILED, Status.CANCELED)
        row.review_reason = "refunded after the service gave up on it" if given_up else ""
    elif event == Event.DECLINED:
        row.error_type = Refund.ErrorType.REFUND_FAILED
        row.error_code, row.error_message = result.code, result.message
    elif event == Event.PROVIDER_PENDING:
        row.provider_refund_id = result.refund_id
        row.claim_token = ""  # held by the provider: reconcile_refunds looks it up
        row.error_type, row.error_code, row.error_message = "", "", ""
    elif event == Event.MISMATCH:
        row.error_type = Refund.ErrorType.OUTCOME_UNKNOWN
        row.error_code, row.error_message = "answer_mismatch", result.mismatch[:500]
        row.review_reason = f"the provider's answer does not match the refund: {result.mismatch}"[:200]
    elif target == Status.UNKNOWN:
        if row.error_type != Refund.ErrorType.OUTCOME_UNKNOWN:
            row.error_code, row.error_message = result.code, result.message
        row.error_type = Refund.ErrorType.OUTCOME_UNKNOWN
    elif target == Status.FAILED:
        row.error_type = Refund.ErrorType.PROVIDER_ERROR
        if result.outcome == Outcome.NOT_FOUND:
            row.error_code, row.error_message = "charge_not_found", "The provider has no such charge."
            row.review_reason = "the provider does not know the charge this refund is for"
        else:
            row.error_code, row.error_message = result.code, result.message


def _log_settled(row: Refund, previous: str, result: ProviderResult) -> None:
    if row.status == previous and not (row.status == Status.PENDING and row.held_by_provider):
        return
    fields = {
        "refund_id": str(row.pk),
        "transaction_id": str(row.transaction_id),
        "amount": row.amount,
        "currency": row.currency,
        "status": row.status,
        "previous_status": previous,
        "error_code": row.error_code,
        "provider_refund_id": row.provider_refund_id,
        "http_attempts": len(result.attempts),
    }
    if row.status == Status.SUCCEEDED and row.review_reason:
        log_event(
            logger,
            "refund.succeeded_late",
            level=logging.ERROR,
            message=f"Refunded after the service gave up on it ({row.review_reason}): support must look",
            **fields,
        )
    elif row.status == Status.SUCCEEDED:
        log_event(logger, "refund.succeeded", message="Refund succeeded", **fields)
    elif row.status == Status.UNKNOWN:
        log_event(
            logger,
            "refund.outcome_unknown",
            level=logging.WARNING,
            message=f"Refund outcome unknown ({row.error_code}); reconcile_refunds will ask the provider",
            **fields,
        )
    elif row.status == Status.PENDING:
        log_event(
            logger, "refund.pending", message="The provider holds the refund; it settles later", **fields
        )
    else:
        log_event(
            logger,
            "refund.failed",
            level=logging.WARNING,
            message=f"Not refunded: {row.error_code}",
            **fields,
        )


def put_back(claimed: Refund, *, status: str, attempts: tuple[provider.Attempt, ...] = (), kind: str) -> None:
    """Give a claimed refund back in `status`, keeping its attempt log (pending: to the provider's
    hold, unclaimed). Raises RefundFenced if the claim lost it."""
    with transaction.atomic():
        row = Refund.objects.select_for_update().get(pk=claimed.pk)
        if not owns(row, claimed):
            raise fenced(row, what="putting it back")
        if transitions.move(row.status, Event.PUT_BACK, by=Actor.RECONCILE, table=REFUND_TABLE):
            record_attempts(txn=row.transaction_id, refund=row, attempts=attempts, kind=kind)
            restored: dict[str, Any] = {
                name: getattr(claimed, name) for name in ("error_type", "error_code", "error_message")
            }
            restored.update(status=status, claim_token="" if status == Status.PENDING else row.claim_token)
            Refund.objects.filter(pk=row.pk).update(**restored)
