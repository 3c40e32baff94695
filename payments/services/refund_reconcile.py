"""reconcile_refunds: asking the provider what became of refunds whose outcome is not known.

Unknown refunds, those the provider holds (it answered "pending"), and those abandoned
mid-call are claimed one at a time (SKIP LOCKED or a conditional UPDATE, so several copies can
run on several hosts), looked up with no connection held, and settled; "not refunded" only
from the provider's typed "no such refund" once no attempt can be in flight.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Collection

from django.db import transaction
from django.db.models import QuerySet

from core.db import release_db_connection
from core.events import log_event
from payments import provider, refund_transitions, transitions
from payments.errors import NotRefundable
from payments.models import Refund, Transaction
from payments.provider import Outcome, ProviderResult
from payments.refund_transitions import REFUND_TABLE
from payments.services import client_events
from payments.services.claims import ActionOutcome, ActionResult, claim
from payments.services.refund_settlement import (
    RefundFenced,
    fenced,
    owns,
    put_back,
    refund_event,
    settle_refund,
)
from payments.services.settlement import ensure_provider_available, record_attempts
from payments.transitions import Actor, Event

logger = logging.getLogger("payments.services")  # one logger name for all the services

Status = Refund.Status
RECONCILE = Actor.RECONCILE
NOT_REFUNDED_CODE = "not_refunded"


def refunds_to_reconcile() -> QuerySet[Refund]:
    """What reconcile_refunds asks the provider about, oldest first: unknown refunds, those the
    provider holds, and those abandoned mid-call."""
    return Refund.objects.filter(refund_transitions.refund_reconcilable_q()).order_by("updated_at", "pk")


def refund_reconcile_next(*, skip_ids: Collection[uuid.UUID], actor: str) -> ActionResult | None:
    ensure_provider_available()
    claimed = claim(refunds_to_reconcile(), by=RECONCILE, skip_ids=skip_ids, table=REFUND_TABLE)
    return None if claimed is None else _isolated(claimed, actor=actor)


def refund_reconcile(*, refund_id: uuid.UUID, actor: str) -> ActionResult:
    candidates = Refund.objects.filter(refund_transitions.refund_reconcilable_q(), pk=refund_id)
    claimed = claim(candidates, by=RECONCILE, table=REFUND_TABLE)
    if claimed is None:
        current = Refund.objects.filter(pk=refund_id).values_list("status", flat=True).first() or ""
        detail = "only an unknown refund, one the provider holds, or one abandoned mid-call can be reconciled"
        return ActionResult(
            refund_id, ActionOutcome.SKIPPED, current, detail if current else "no such refund"
        )
    return _isolated(claimed, actor=actor)


def _isolated(claimed: Refund, *, actor: str) -> ActionResult:
    """One refund's lookup; an unexpected error flags it for review and the batch goes on."""
    try:
        return _reconcile_claimed(claimed, actor=actor)
    except RefundFenced as exc:
        return ActionResult(claimed.pk, ActionOutcome.SKIPPED, exc.row.status, "another process took it over")
    except Exception as exc:
        log_event(
            logger,
            "payment.command_error",
            level=logging.ERROR,
            message=f"{actor}: error on one refund; flagged for review, going on",
            exc_info=True,
            refund_id=str(claimed.pk),
            actor=actor,
        )
        reason = f"{actor} hit an error ({type(exc).__name__}); see the log"
        with contextlib.suppress(RefundFenced):
            put_back(claimed, status=_back_status(claimed), kind="refund_lookup")
        Refund.objects.filter(pk=claimed.pk).update(review_reason=reason)
        return ActionResult(claimed.pk, ActionOutcome.ERROR, claimed.status, reason)


def _back_status(claimed: Refund) -> str:
    """Where a lookup that told nothing leaves the refund: held by the provider if it said so
    before, unknown otherwise (one abandoned mid-send may have been made)."""
    if claimed.status == Status.PENDING and claimed.provider_refund_id:
        return Status.PENDING
    return Status.UNKNOWN


def _reconcile_claimed(claimed: Refund, *, actor: str) -> ActionResult:
    charge = Transaction.objects.get(pk=claimed.transaction_id)
    back = _back_status(claimed)
    if claimed.status == Status.PENDING and back == Status.UNKNOWN:
        claimed.error_type = Refund.ErrorType.OUTCOME_UNKNOWN
        claimed.error_code = claimed.error_code or "interrupted"
    release_db_connection()
    try:
        result = provider.get_client().refund_lookup(
            charge_key=charge.provider_idempotency_key,
            refund_key=claimed.provider_idempotency_key,
            amount=claimed.amount,
            charge_id=charge.provider_charge_id,
        )
    except BaseException:
        with contextlib.suppress(RefundFenced):
            put_back(claimed, status=back, kind="refund_lookup")
        raise
    detail = ""
    if result.outcome == Outcome.NOT_FOUND and _settle_not_refunded(claimed, result):
        outcome = ActionOutcome.NOT_REFUNDED
    elif refund_event(claimed, result, kind="refund_lookup") is not None:
        settled = settle_refund(claimed=claimed, result=result, by=RECONCILE, kind="refund_lookup")
        outcome = {
            Status.SUCCEEDED: ActionOutcome.SUCCEEDED,
            Status.FAILED: ActionOutcome.DECLINED,
        }.get(settled.status, ActionOutcome.UNKNOWN)
    else:
        put_back(claimed, status=back, attempts=result.attempts, kind="refund_lookup")
        outcome = ActionOutcome.UNKNOWN if result.outcome == Outcome.NOT_FOUND else ActionOutcome.UNAVAILABLE
        detail = (
            "no refund found yet; an attempt may still be in flight"
            if result.outcome == Outcome.NOT_FOUND
            else result.message
        )
    current = Refund.objects.get(pk=claimed.pk)
    log_event(
        logger,
        "refund.reconciled",
        level=logging.WARNING if outcome == ActionOutcome.UNAVAILABLE else logging.INFO,
        message=f"Refund reconciled by {actor}: {outcome}",
        refund_id=str(claimed.pk),
        transaction_id=str(charge.pk),
        outcome=outcome.value,
        status=current.status,
        actor=actor,
    )
    return ActionResult(claimed.pk, outcome, current.status, detail or current.error_message)


def _settle_not_refunded(claimed: Refund, result: ProviderResult) -> bool:
    """The provider has no such refund: failed (may be sent again with the same key) if, by the
    database's clock on the locked row, no attempt of the latest refund call can be in flight.
    False: one still may be, and nothing was written."""
    with transaction.atomic():
        row = Refund.objects.select_for_update().get(pk=claimed.pk)
        if not owns(row, claimed):
            raise fenced(row, what="its lookup's 'no such refund'")
        if not Refund.objects.filter(refund_transitions.refund_window_passed_q(), pk=row.pk).exists():
            return False
        if transitions.move(row.status, Event.NOT_FOUND, by=RECONCILE, table=REFUND_TABLE) != Status.FAILED:
            return False
        record_attempts(txn=row.transaction_id, refund=row, attempts=result.attempts, kind="refund_lookup")
        claimed_status = row.status
        row.status = Status.FAILED
        row.error_type = Refund.ErrorType.PROVIDER_ERROR
        row.error_code = NOT_REFUNDED_CODE
        row.error_message = "The provider made no refund with this key; sending it again is safe."
        row.save()
        client_events.record_refund_change(row, before_status=claimed_status)
    log_event(
        logger,
        "refund.failed",
        level=logging.WARNING,
        message="Not refunded: a lookup found no refund",
        refund_id=str(row.pk),
        transaction_id=str(row.transaction_id),
        error_code=NOT_REFUNDED_CODE,
    )
    return True


def refund_cancel(*, refund_id: uuid.UUID, actor: str) -> Refund:
    """Give up on a refund that was not made (failed): it is never sent again."""
    with transaction.atomic():
        row = Refund.objects.select_for_update().get(pk=refund_id)
        target = transitions.move(row.status, Event.CANCEL, by=Actor.SUPPORT, table=REFUND_TABLE)
        if target is None or not refund_transitions.refund_resendable(row):
            raise NotRefundable(f"Only a refund that was not made can be canceled; this one is {row.status}.")
        row.status = target
        row.save()
    log_event(
        logger, "refund.canceled", message=f"Refund canceled by {actor}", refund_id=str(row.pk), actor=actor
    )
    return row
