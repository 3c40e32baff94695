"""Support actions and the batch commands' units of work: retry, reconcile, cancel, flag.

Each works on one claimed row and reports an ActionResult; the admin and the commands call these.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.events import log_event
from payments import provider, selectors, transitions
from payments.errors import InvalidRequest, NotCancelable
from payments.models import Transaction
from payments.provider import Outcome, ProviderResult
from payments.services import client_events
from payments.services.claims import (
    OUTCOME_OF_STATUS,
    ActionOutcome,
    ActionResult,
    call_provider_for_claim,
    claim,
    isolated,
    put_back,
    skipped,
)
from payments.services.settlement import (
    NOTHING_SENT,
    alarm_misconfigured,
    assign,
    ensure_provider_available,
    interrupted_fields,
    log_needs_review,
    send_charge,
    settle,
    settle_not_charged,
)
from payments.transitions import Actor, Event

logger = logging.getLogger("payments.services")  # one logger name for all the services, as before the split

Status = Transaction.Status
RETRY, RECONCILE, SUPPORT = Actor.RETRY, Actor.RECONCILE, Actor.SUPPORT


def charge_retry(*, transaction_id: uuid.UUID, actor: str) -> ActionResult:
    """Send a failed transaction again now, due or not, within the attempt limit."""
    claimed = claim(
        Transaction.objects.filter(transitions.retryable_q(), pk=transaction_id), by=RETRY, for_charge=True
    )
    if claimed is None:
        return skipped(transaction_id, transitions.retry_refusal())
    return isolated(claimed, actor, _retry_claimed, by=RETRY)


def charge_retry_next(*, skip_ids: Collection[uuid.UUID], actor: str) -> ActionResult | None:
    """Claim the next due failed transaction and send it again; None when none is due.

    Raises ProviderUnavailable, claiming nothing, while the circuit breaker is open.
    """
    ensure_provider_available()
    candidates = selectors.due_for_retry(now=timezone.now())
    claimed = claim(candidates, by=RETRY, skip_ids=skip_ids, for_charge=True)
    return None if claimed is None else isolated(claimed, actor, _retry_claimed, by=RETRY)


def flag_exhausted() -> int:
    """Flag for review, at once, failed rows that may not be tried again (the limit was lowered,
    say): they would otherwise wait for a retry that never comes."""
    flagged = 0
    for txn in selectors.exhausted_unflagged():
        reason = f"not charged after {txn.attempts} tries (limit {settings.PAYMENT_MAX_ATTEMPTS})"
        with transaction.atomic():
            changed = Transaction.objects.filter(pk=txn.pk, status=Status.FAILED, review_reason="").update(
                next_retry_at=None, review_reason=reason, updated_at=timezone.now()
            )
            if changed:
                txn.refresh_from_db()
                client_events.record_charge_change(txn, before_status=Status.FAILED, before_review=False)
        if changed:
            log_needs_review(txn)
            flagged += 1
    return flagged


def _retry_claimed(claimed: Transaction, *, actor: str) -> ActionResult:
    if not claimed.source:
        put_back(claimed, by=RETRY)
        return skipped(claimed.pk, "no card token is stored for this transaction")
    result = call_provider_for_claim(
        claimed, lambda client: send_charge(claimed, client), kind="charge", by=RETRY
    )
    if result.outcome in NOTHING_SENT:
        put_back(claimed, by=RETRY, attempts=result.attempts, kind="charge")
        if result.outcome == Outcome.MISCONFIGURED:
            alarm_misconfigured(result)
        return ActionResult(claimed.pk, ActionOutcome.UNAVAILABLE, claimed.status, result.message)
    settled = settle(claimed=claimed, result=result, by=RETRY)
    outcome = OUTCOME_OF_STATUS.get(settled.status, ActionOutcome.SKIPPED)
    log_event(
        logger,
        "payment.retried",
        message=f"Retried by {actor}: {outcome}",
        transaction_id=str(settled.pk),
        outcome=outcome.value,
        attempt=settled.attempts,
        actor=actor,
    )
    return ActionResult(settled.pk, outcome, settled.status, settled.error_message)


def charge_reconcile(*, transaction_id: uuid.UUID, actor: str) -> ActionResult:
    """Ask the provider what became of one unknown-outcome transaction, or of a pending one
    abandoned mid-call (pending for longer than PAYMENT_RECONCILE_AFTER_S)."""
    candidates = Transaction.objects.filter(transitions.reconcilable_q(), pk=transaction_id)
    claimed = claim(candidates, by=RECONCILE)
    if claimed is None:
        return skipped(
            transaction_id,
            "only a payment whose outcome is unknown, or one pending for over "
            f"{settings.PAYMENT_RECONCILE_AFTER_S} s, can be reconciled",
        )
    return isolated(claimed, actor, reconcile_claimed, by=RECONCILE)


def charge_reconcile_next(*, skip_ids: Collection[uuid.UUID], actor: str) -> ActionResult | None:
    """Claim the next unknown or abandoned transaction whose attempts can no longer be in flight,
    and look it up. Raises ProviderUnavailable, claiming nothing, while the breaker is open."""
    ensure_provider_available()
    candidates = selectors.to_reconcile()
    claimed = claim(candidates, by=RECONCILE, skip_ids=skip_ids)
    return None if claimed is None else isolated(claimed, actor, reconcile_claimed, by=RECONCILE)


def reconcile_claimed(claimed: Transaction, *, actor: str) -> ActionResult:
    if claimed.status == Status.PENDING:
        assign(claimed, interrupted_fields(claimed))  # abandoned mid-call: put back as unknown

    def look_up(client: provider.PaymentProvider) -> ProviderResult:
        # What the charge found must be this one: the same amount, currency and reference.
        return client.lookup(
            provider_key=claimed.provider_idempotency_key,
            amount=claimed.amount,
            currency=claimed.currency,
            reference=str(claimed.pk),
        )

    result = call_provider_for_claim(claimed, look_up, kind="lookup", by=RECONCILE)
    return settle_lookup(claimed, result, actor=actor)


def settle_lookup(claimed: Transaction, result: ProviderResult, *, actor: str) -> ActionResult:
    """Record what a lookup for a claimed row found (raises Fenced if the claim lost the row)."""
    detail = ""
    not_charged = settle_not_charged(claimed, result) if result.outcome == Outcome.NOT_FOUND else None
    if result.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED):
        settled = settle(claimed=claimed, result=result, by=RECONCILE, kind="lookup")
        outcome = OUTCOME_OF_STATUS[settled.status]
    elif not_charged is not None:
        settled = not_charged
        outcome = ActionOutcome.NOT_CHARGED
    elif result.outcome == Outcome.NOT_FOUND:
        # No charge yet, but an attempt may still be in flight (by the database's clock): a
        # "no such charge" proves nothing until then.
        settled = put_back(claimed, by=RECONCILE, attempts=result.attempts, kind="lookup")
        outcome = ActionOutcome.UNKNOWN
        until = transitions.in_flight_until(settled)
        detail = f"no charge found yet; an attempt may be in flight until about {until.isoformat()}"
    else:
        review = (
            "the provider's answer to a lookup could not be used" if result.code == "unusable_answer" else ""
        )
        settled = put_back(
            claimed, by=RECONCILE, attempts=result.attempts, kind="lookup", review_reason=review
        )
        outcome = ActionOutcome.UNAVAILABLE
        detail = result.message
    log_event(
        logger,
        "payment.reconciled",
        level=logging.WARNING if outcome == ActionOutcome.UNAVAILABLE else logging.INFO,
        message=f"Reconciled by {actor}: {outcome}",
        transaction_id=str(claimed.pk),
        outcome=outcome.value,
        previous_status=claimed.status,
        status=settled.status,
        provider_charge_id=settled.provider_charge_id,
        actor=actor,
    )
    return ActionResult(claimed.pk, outcome, settled.status, detail or settled.error_message)


def charge_cancel(*, transaction_id: uuid.UUID, reason: str, actor: str, by: Actor = SUPPORT) -> Transaction:
    """Give up on a payment that was not charged; it will never be sent again. Idempotent.

    Refused (NotCancelable) while it may have been charged (unknown, or in flight) or once final.
    """
    reason = reason.strip()
    if not reason:
        raise InvalidRequest("A reason is required to cancel a payment.", code="reason_required")
    with transaction.atomic():
        txn = Transaction.objects.select_for_update().get(pk=transaction_id)
        if txn.status == Status.CANCELED:
            return txn
        refusal = transitions.cancel_refusal(txn)
        if refusal:
            raise NotCancelable(f"This payment cannot be canceled: {refusal}.", transaction=txn)
        txn.status = transitions.move(txn.status, Event.CANCEL, by=by)
        txn.status_note = reason[:500]
        txn.source = ""
        txn.next_retry_at = None
        txn.review_reason = ""
        txn.save(
            update_fields=["status", "status_note", "source", "next_retry_at", "review_reason", "updated_at"]
        )
        client_events.record_charge_change(txn, before_status=Status.FAILED, before_review=False)
    log_event(
        logger,
        "payment.canceled",
        message=f"Canceled by {actor}: {txn.status_note}",
        transaction_id=str(txn.pk),
        actor=actor,
        reason=txn.status_note,
        amount=txn.amount,
        currency=txn.currency,
    )
    return txn
