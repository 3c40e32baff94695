"""Operations on payments: the API, the admin and the commands all call these.

The rule that shapes this module: no database transaction, and no pooled
connection, is held while the provider is called. Each operation is
"short write, release the connection, call the provider, short write".
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from core import metrics
from core.db import release_db_connection
from core.events import log_event
from core.logs.request_id import current_request_id
from payments import failpoints, provider, selectors
from payments.breaker import CircuitOpen
from payments.exceptions import (
    CardDeclined,
    ChargeCanceled,
    IdempotencyConflict,
    InvalidRequest,
    NeedsReview,
    NotCancelable,
    OutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
    RequestInProgress,
    RetryScheduled,
)
from payments.models import PaymentAttempt, Transaction, mask_source
from payments.provider import Outcome, ProviderResult

logger = logging.getLogger(__name__)

Status = Transaction.Status

RETRY_BASE_DELAY_S = 60
RETRY_MAX_DELAY_S = 3600


@dataclass(frozen=True)
class Charged:
    transaction: Transaction
    replayed: bool = False


@dataclass(frozen=True)
class ChargeRequest:
    amount: int
    currency: str
    source: str
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        canonical = json.dumps(
            [self.amount, self.currency, self.source, self.description, self.metadata],
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def charge_create(
    *, client: AbstractBaseUser, request: ChargeRequest, idempotency_key: str | None
) -> Charged:
    """Charge once. Returns the succeeded transaction or raises a PaymentError.

    With an idempotency key, a completed charge is replayed, a failed or unknown one is sent
    again with the same provider key (the provider charges a key at most once), and one in
    flight is a conflict.
    """
    if idempotency_key is not None:
        existing = selectors.transaction_for_key(client=client, idempotency_key=idempotency_key)
        if existing is not None:
            return _resume(existing, request.fingerprint())
    with _provider_call_slot():
        failpoints.hit("charge.before_insert")
        txn = _insert_pending(client=client, request=request, idempotency_key=idempotency_key)
        if txn is not None:
            return _call_provider_and_settle(txn, previous=None)
    # Another request with the same key inserted first.
    existing = selectors.transaction_for_key(client=client, idempotency_key=idempotency_key or "")
    if existing is None:
        raise RequestInProgress()
    return _resume(existing, request.fingerprint())


def _insert_pending(
    *, client: AbstractBaseUser, request: ChargeRequest, idempotency_key: str | None
) -> Transaction | None:
    """The pending row, committed before the provider is called; None if the key is taken."""
    try:
        with transaction.atomic():
            return Transaction.objects.create(
                client=client,
                amount=request.amount,
                currency=request.currency,
                source=request.source,
                source_masked=mask_source(request.source),
                description=request.description,
                metadata=request.metadata,
                idempotency_key=idempotency_key,
                request_fingerprint=request.fingerprint(),
                status=Status.PENDING,
                charge_started_at=timezone.now(),
                last_request_id=current_request_id() or "",
            )
    except IntegrityError:
        if idempotency_key is None:
            raise
        return None


def reconcile_after() -> timedelta:
    return timedelta(seconds=settings.PAYMENT_RECONCILE_AFTER_S)


def _resume(txn: Transaction, fingerprint: str) -> Charged:
    if txn.request_fingerprint != fingerprint:
        raise IdempotencyConflict(transaction=txn)
    sendable = txn.status in (Status.FAILED, Status.UNKNOWN) and txn.attempts < settings.PAYMENT_MAX_ATTEMPTS
    abandoned = txn.status == Status.PENDING and txn.updated_at < timezone.now() - reconcile_after()
    if not (sendable or abandoned):
        return raise_for_status(txn, replayed=True)
    with _provider_call_slot():
        # Sending again with the same provider key is safe: the provider charges it at most once.
        previous = _claim_for_charge(txn)
        if previous is None:
            raise RequestInProgress(transaction=selectors.transaction_get(transaction_id=txn.pk))
        return _call_provider_and_settle(previous, previous=previous)


def _claim_for_charge(txn: Transaction) -> Transaction | None:
    """Move the row to pending with a conditional UPDATE, so only one caller sends it.

    Returns the row as it was before the claim (to put it back), or None if another got it.
    """
    if txn.status == Status.PENDING:
        candidates = Transaction.objects.filter(
            pk=txn.pk, status=Status.PENDING, updated_at__lt=timezone.now() - reconcile_after()
        )
    else:
        candidates = Transaction.objects.filter(
            pk=txn.pk, status=txn.status, attempts__lt=settings.PAYMENT_MAX_ATTEMPTS
        )
    now = timezone.now()
    changes: dict[str, Any] = {
        "status": Status.PENDING,
        "updated_at": now,
        "charge_started_at": now,
        "last_request_id": current_request_id() or "",
    }
    # Abandoned mid-call by a process that died: the provider may have charged it.
    interrupted = _interrupted_fields(txn) if txn.status == Status.PENDING else {}
    changes.update({name: value for name, value in interrupted.items() if name != "status"})
    if candidates.update(**changes) != 1:
        return None
    _assign(txn, interrupted)  # as it is to be put back
    return txn


def _interrupted_fields(txn: Transaction) -> dict[str, Any]:
    """What makes a row whose provider call was cut off `unknown`; an earlier unknown cause stays."""
    fields: dict[str, Any] = {"status": Status.UNKNOWN}
    if txn.error_type != Transaction.ErrorType.OUTCOME_UNKNOWN:
        fields.update(
            error_type=Transaction.ErrorType.OUTCOME_UNKNOWN,
            error_code="interrupted",
            error_message="The process sending it stopped during the provider call.",
        )
    return fields


def _assign(txn: Transaction, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        setattr(txn, name, value)


def _ensure_provider_available() -> None:
    try:
        provider.get_client().breaker.check()
    except CircuitOpen as exc:
        raise ProviderUnavailable(code="circuit_open", retry_after_s=exc.retry_after_s) from exc


@contextlib.contextmanager
def _provider_call_slot() -> Iterator[None]:
    """Refuse at once, writing nothing, when the provider cannot take the call now.

    Either the breaker is open, or this process already has
    PAYMENT_MAX_CONCURRENT_CALLS requests waiting on the provider: a hanging
    provider must not take every thread, or /health/ and the admin stop answering.
    """
    _ensure_provider_available()
    slots = provider.get_client().call_slots
    if not slots.acquire(blocking=False):
        raise ProviderUnavailable(code="provider_busy", retry_after_s=1)
    try:
        yield
    finally:
        slots.release()


def _call_provider_and_settle(txn: Transaction, *, previous: Transaction | None) -> Charged:
    """Send the charge and record its outcome. `previous`: the row before it was claimed
    (None for a row this request just inserted)."""
    # The pending row is committed; give the connection back before the provider call,
    # which may take seconds (the incident's root cause).
    release_db_connection()
    failpoints.hit("charge.before_call")
    result = _charge(txn, provider.get_client())
    failpoints.hit("charge.after_call")
    if result.outcome in NOTHING_SENT:
        _unsend(txn, previous=previous, result=result)
        if result.outcome == Outcome.MISCONFIGURED:
            _alarm_misconfigured(result)
            raise ProviderUnavailable(code="provider_misconfigured", retry_after_s=60)
        raise ProviderUnavailable(code=result.code, retry_after_s=max(1, result.retry_after_s))
    try:
        settled = _settle_with_retry(transaction_id=txn.pk, result=result)
    except DatabaseError as exc:
        # The provider was called but its answer could not be saved: whatever it said, the row
        # is still pending and reconcile_payments will settle it. Never "busy, not charged".
        log_event(
            logger,
            "payment.settle_failed",
            level=logging.ERROR,
            message=f"Could not record the provider's answer ({result.outcome}): {type(exc).__name__}",
            transaction_id=str(txn.pk),
            outcome=result.outcome.value,
            provider_charge_id=result.charge_id,
        )
        txn.status, txn.error_type, txn.error_code = Status.UNKNOWN, "outcome_unknown", "settle_failed"
        raise OutcomeUnknown(code="settle_failed", transaction=txn) from exc
    return raise_for_status(settled)


# Answers after which the provider holds no charge and nothing will send one: the row goes back.
NOTHING_SENT = frozenset({Outcome.UNAVAILABLE, Outcome.MISCONFIGURED})


def _unsend(txn: Transaction, *, previous: Transaction | None, result: ProviderResult) -> None:
    """Nothing was charged: forget a row this request inserted, or put a claimed one back.

    A breaker refusal or a provider that refuses our credentials must leave nothing that a
    command would charge later, while the caller is told "not charged".
    """
    with transaction.atomic():
        if previous is None:
            Transaction.objects.filter(pk=txn.pk, status=Status.PENDING).delete()
        else:
            _put_back(previous, attempts=result.attempts, kind="charge")


def _alarm_misconfigured(result: ProviderResult) -> None:
    provider.note_misconfigured(result.http_status)
    log_event(
        logger,
        "provider.misconfigured",
        level=logging.ERROR,
        message=f"The provider refused our request with HTTP {result.http_status}: check "
        "PAYMENT_API_KEY and PAYMENT_SERVICE_URL. No payment is sent until this is fixed.",
        http_status=result.http_status,
    )


# Pauses between the tries of settle on a database error (three tries in all).
SETTLE_BACKOFF_S = (0.2, 0.5)


def _settle_with_retry(*, transaction_id: uuid.UUID, result: ProviderResult) -> Transaction:
    """settle(), tried again on a database error with a fresh connection each time."""
    for pause_s in SETTLE_BACKOFF_S:
        try:
            return settle(transaction_id=transaction_id, result=result)
        except DatabaseError:
            release_db_connection()
            time.sleep(pause_s)
    return settle(transaction_id=transaction_id, result=result)


def _charge(txn: Transaction, client: provider.ProviderClient) -> ProviderResult:
    # The same provider key and body on every call: the provider charges a key at most once.
    return client.charge(
        provider_key=txn.provider_idempotency_key,
        amount=txn.amount,
        currency=txn.currency,
        source=txn.source,
        reference=str(txn.pk),
        description=txn.description,
    )


def _next_retry_at(attempts: int) -> datetime | None:
    if attempts >= settings.PAYMENT_MAX_ATTEMPTS:
        return None
    delay_s = min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * 2 ** max(0, attempts - 1))
    return timezone.now() + timedelta(seconds=delay_s)


def record_attempts(*, txn: Transaction, attempts: tuple[provider.Attempt, ...], kind: str) -> None:
    if not attempts:
        return
    first_number = PaymentAttempt.objects.filter(transaction=txn).count() + 1
    PaymentAttempt.objects.bulk_create(
        PaymentAttempt(
            transaction=txn,
            number=first_number + offset,
            kind=kind,
            started_at=attempt.started_at,
            duration_ms=attempt.duration_ms,
            http_status=attempt.http_status,
            outcome=attempt.outcome,
            reached_provider=attempt.reached_provider,
            message=attempt.message,
        )
        for offset, attempt in enumerate(attempts)
    )


def settle(*, transaction_id: uuid.UUID, result: ProviderResult, kind: str = "charge") -> Transaction:
    """Record the attempts and the outcome in one short transaction, under a row lock.

    The rules of payments.outcomes: a definitive answer settles any row that is not final;
    after a charge call, anything else leaves the row unknown if this call or any earlier one
    may have charged (unknown is sticky), failed otherwise.
    """
    with transaction.atomic():
        txn = Transaction.objects.select_for_update().get(pk=transaction_id)
        failpoints.hit("settle")
        record_attempts(txn=txn, attempts=result.attempts, kind=kind)
        previous_status = txn.status
        if kind == "charge" and result.attempts:
            txn.attempts += 1
        if result.outcome in FINAL_OUTCOMES and txn.can_move_to(FINAL_OUTCOMES[result.outcome][0]):
            status, error_type = FINAL_OUTCOMES[result.outcome]
            txn.status, txn.error_type = status, error_type
            txn.provider_charge_id = result.charge_id
            txn.error_code = "" if status == Status.SUCCEEDED else result.code
            txn.error_message = "" if status == Status.SUCCEEDED else result.message
            txn.source = ""
            txn.next_retry_at = None
            txn.review_reason = ""
        elif kind == "charge" and txn.status == Status.PENDING:
            if result.outcome == Outcome.UNKNOWN or txn.error_type == Transaction.ErrorType.OUTCOME_UNKNOWN:
                if txn.error_type != Transaction.ErrorType.OUTCOME_UNKNOWN:
                    txn.error_code, txn.error_message = result.code, result.message
                txn.status = Status.UNKNOWN
                txn.error_type = Transaction.ErrorType.OUTCOME_UNKNOWN
                txn.next_retry_at = None
            else:
                txn.status = Status.FAILED
                txn.error_type = Transaction.ErrorType.PROVIDER_ERROR
                txn.error_code, txn.error_message = result.code, result.message
                txn.next_retry_at = _next_retry_at(txn.attempts)
                if txn.next_retry_at is None:
                    txn.review_reason = f"not charged after {txn.attempts} tries"
        txn.save()
    if kind == "charge":
        metrics.CHARGES.labels(result.outcome.value).inc()
    _log_settled(txn, previous_status, result)
    return txn


FINAL_OUTCOMES = {
    Outcome.SUCCEEDED: (Status.SUCCEEDED, ""),
    Outcome.DECLINED: (Status.DECLINED, Transaction.ErrorType.CARD_ERROR),
    Outcome.REJECTED: (Status.DECLINED, Transaction.ErrorType.PROVIDER_REJECTED),
}


def _log_settled(txn: Transaction, previous_status: str, result: ProviderResult) -> None:
    fields = {
        "transaction_id": str(txn.pk),
        "attempt": txn.attempts,
        "http_attempts": len(result.attempts),
        "duration_ms": sum(a.duration_ms for a in result.attempts),
        "http_status": result.http_status,
        "amount": txn.amount,
        "currency": txn.currency,
        "error_type": txn.error_type,
        "error_code": txn.error_code,
    }
    if txn.status == previous_status:
        return
    if txn.status == Status.SUCCEEDED:
        log_event(logger, "payment.succeeded", message="Payment succeeded", **fields)
    elif txn.status == Status.DECLINED:
        log_event(logger, "payment.declined", message=f"Declined: {txn.error_code}", **fields)
    elif txn.status == Status.UNKNOWN:
        log_event(
            logger,
            "payment.outcome_unknown",
            level=logging.WARNING,
            message=f"Outcome unknown ({txn.error_code}); reconcile_payments will ask the provider",
            **fields,
        )
    elif txn.status == Status.FAILED:
        log_event(
            logger,
            "payment.failed",
            level=logging.WARNING,
            message=f"Not charged: {txn.error_code}",
            **fields,
        )
        if txn.next_retry_at is None:
            _log_needs_review(txn)
        else:
            log_event(
                logger,
                "payment.retry_scheduled",
                message=f"Retry scheduled at {txn.next_retry_at.isoformat()}",
                next_retry_at=txn.next_retry_at.isoformat(),
                **fields,
            )


def _log_needs_review(txn: Transaction) -> None:
    log_event(
        logger,
        "payment.needs_review",
        level=logging.WARNING,
        message=f"Needs review: {txn.review_reason}",
        transaction_id=str(txn.pk),
        attempt=txn.attempts,
        reason=txn.review_reason,
    )


def raise_for_status(txn: Transaction, *, replayed: bool = False) -> Charged:
    """Turn a transaction into the API's answer: itself, or the typed error of its row in
    payments.outcomes."""
    if txn.status == Status.SUCCEEDED:
        return Charged(transaction=txn, replayed=replayed)
    if txn.status == Status.DECLINED and txn.error_type == Transaction.ErrorType.PROVIDER_REJECTED:
        raise ProviderRejected(transaction=txn, replayed=replayed, extra={"provider_code": txn.error_code})
    if txn.status == Status.DECLINED:
        raise CardDeclined(transaction=txn, replayed=replayed, extra={"decline_code": txn.error_code})
    if txn.status == Status.CANCELED:
        raise ChargeCanceled(transaction=txn, replayed=replayed)
    if txn.status == Status.PENDING:
        raise RequestInProgress(transaction=txn)
    if txn.status == Status.UNKNOWN:
        raise OutcomeUnknown(code=txn.error_code or "interrupted", transaction=txn, replayed=replayed)
    if txn.next_retry_at is None or txn.attempts >= settings.PAYMENT_MAX_ATTEMPTS:
        raise NeedsReview(transaction=txn, replayed=replayed)
    raise RetryScheduled(code=txn.error_code or "provider_error", transaction=txn, replayed=replayed)


# Support tools: retry, reconcile and cancel (the admin and the commands) ------

SUPPORT_GROUP_NAME = "Payment support"
SUPPORT_PERMISSIONS = (
    "view_transaction",
    "view_paymentattempt",
    "retry_transaction",
    "cancel_transaction",
)
# Without row locks (SQLite) a claim can lose to another process; try a few candidates per query.
CLAIM_CANDIDATES = 10


class ActionOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    FAILED = "failed"  # sent again; the provider failed again (not charged)
    UNKNOWN = "unknown"  # sent again or looked up; still not known whether it was charged
    NOT_CHARGED = "not_charged"  # the provider made no charge: failed and retryable
    UNAVAILABLE = "unavailable"  # the provider could not be asked: left as it was
    SKIPPED = "skipped"  # not eligible, or another process got there first
    ERROR = "error"  # an unexpected error on this row: flagged for review, the batch goes on


# Outcomes a batch command counts as errors (exit code 1).
ERROR_OUTCOMES = frozenset({ActionOutcome.UNAVAILABLE, ActionOutcome.ERROR})


@dataclass(frozen=True)
class ActionResult:
    transaction_id: uuid.UUID
    outcome: ActionOutcome
    status: str
    detail: str = ""


_OUTCOME_OF_STATUS = {
    Status.SUCCEEDED: ActionOutcome.SUCCEEDED,
    Status.DECLINED: ActionOutcome.DECLINED,
    Status.FAILED: ActionOutcome.FAILED,
    Status.UNKNOWN: ActionOutcome.UNKNOWN,
}


def charge_retry(*, transaction_id: uuid.UUID, actor: str) -> ActionResult:
    """Send a failed transaction again now, due or not, within the attempt limit."""
    claimed = _claim(
        Transaction.objects.filter(
            pk=transaction_id, status=Status.FAILED, attempts__lt=settings.PAYMENT_MAX_ATTEMPTS
        ),
        for_charge=True,
    )
    if claimed is None:
        return _skipped(
            transaction_id,
            f"only a failed payment with fewer than {settings.PAYMENT_MAX_ATTEMPTS} tries can be retried",
        )
    return _isolated(claimed, actor, _retry_claimed)


def charge_retry_next(*, skip_ids: Collection[uuid.UUID], actor: str) -> ActionResult | None:
    """Claim the next due failed transaction and send it again; None when none is due.

    Raises ProviderUnavailable, claiming nothing, while the circuit breaker is open.
    """
    _ensure_provider_available()
    candidates = selectors.due_for_retry(now=timezone.now(), max_attempts=settings.PAYMENT_MAX_ATTEMPTS)
    claimed = _claim(candidates, skip_ids=skip_ids, for_charge=True)
    return None if claimed is None else _isolated(claimed, actor, _retry_claimed)


def flag_exhausted() -> int:
    """Flag for review, at once, failed rows that may not be tried again (the limit was lowered,
    say): they would otherwise wait for a retry that never comes."""
    flagged = 0
    for txn in selectors.exhausted_unflagged(max_attempts=settings.PAYMENT_MAX_ATTEMPTS):
        reason = f"not charged after {txn.attempts} tries (limit {settings.PAYMENT_MAX_ATTEMPTS})"
        if Transaction.objects.filter(pk=txn.pk, status=Status.FAILED, review_reason="").update(
            next_retry_at=None, review_reason=reason, updated_at=timezone.now()
        ):
            txn.review_reason = reason
            _log_needs_review(txn)
            flagged += 1
    return flagged


def _retry_claimed(claimed: Transaction, *, actor: str) -> ActionResult:
    if not claimed.source:
        _put_back(claimed)
        return _skipped(claimed.pk, "no card token is stored for this transaction")
    result = _call_provider_for_claim(claimed, lambda client: _charge(claimed, client), kind="charge")
    if result.outcome in NOTHING_SENT:
        _put_back(claimed, attempts=result.attempts, kind="charge")
        if result.outcome == Outcome.MISCONFIGURED:
            _alarm_misconfigured(result)
        return ActionResult(claimed.pk, ActionOutcome.UNAVAILABLE, claimed.status, result.message)
    settled = settle(transaction_id=claimed.pk, result=result)
    outcome = _OUTCOME_OF_STATUS.get(settled.status, ActionOutcome.SKIPPED)
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
    candidates = Transaction.objects.filter(pk=transaction_id).filter(
        Q(status=Status.UNKNOWN) | Q(status=Status.PENDING, updated_at__lt=timezone.now() - reconcile_after())
    )
    claimed = _claim(candidates)
    if claimed is None:
        return _skipped(
            transaction_id,
            "only a payment whose outcome is unknown, or one pending for over "
            f"{settings.PAYMENT_RECONCILE_AFTER_S} s, can be reconciled",
        )
    return _isolated(claimed, actor, _reconcile_claimed)


def charge_reconcile_next(*, skip_ids: Collection[uuid.UUID], actor: str) -> ActionResult | None:
    """Claim the next unknown or abandoned transaction whose attempts can no longer be in flight,
    and look it up. Raises ProviderUnavailable, claiming nothing, while the breaker is open."""
    _ensure_provider_available()
    candidates = selectors.to_reconcile(started_before=timezone.now() - reconcile_after())
    claimed = _claim(candidates, skip_ids=skip_ids)
    return None if claimed is None else _isolated(claimed, actor, _reconcile_claimed)


def _reconcile_claimed(claimed: Transaction, *, actor: str) -> ActionResult:
    if claimed.status == Status.PENDING:
        _assign(claimed, _interrupted_fields(claimed))  # abandoned mid-call: put back as unknown
    provider_key = claimed.provider_idempotency_key
    result = _call_provider_for_claim(
        claimed, lambda client: client.lookup(provider_key=provider_key), kind="lookup"
    )
    in_flight_until = (claimed.charge_started_at or claimed.created_at) + reconcile_after()
    detail = ""
    if result.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED):
        settled = settle(transaction_id=claimed.pk, result=result, kind="lookup")
        outcome = _OUTCOME_OF_STATUS[settled.status]
    elif result.outcome == Outcome.NOT_FOUND and timezone.now() >= in_flight_until:
        settled = _settle_not_charged(claimed, result)
        outcome = ActionOutcome.NOT_CHARGED
    elif result.outcome == Outcome.NOT_FOUND:
        # No charge yet, but an attempt may still be in flight: a 404 proves nothing until then.
        settled = _put_back(claimed, attempts=result.attempts, kind="lookup")
        outcome = ActionOutcome.UNKNOWN
        detail = f"no charge found yet; an attempt may be in flight until {in_flight_until.isoformat()}"
    else:
        review = (
            "the provider's answer to a lookup could not be used" if result.code == "unusable_answer" else ""
        )
        settled = _put_back(claimed, attempts=result.attempts, kind="lookup", review_reason=review)
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


def _settle_not_charged(claimed: Transaction, result: ProviderResult) -> Transaction:
    """The provider has no charge for the key and no attempt can be in flight: failed, and
    safe to send again."""
    with transaction.atomic():
        txn = Transaction.objects.select_for_update().get(pk=claimed.pk)
        record_attempts(txn=txn, attempts=result.attempts, kind="lookup")
        if txn.status == Status.PENDING:
            txn.status = Status.FAILED
            txn.error_type = Transaction.ErrorType.PROVIDER_ERROR
            txn.error_code = selectors.NOT_CHARGED_CODE
            txn.error_message = "The provider made no charge with this key; sending it again is safe."
            txn.next_retry_at = timezone.now() if txn.attempts < settings.PAYMENT_MAX_ATTEMPTS else None
            txn.review_reason = "" if txn.next_retry_at else f"not charged after {txn.attempts} tries"
            txn.save()
    if txn.needs_review:
        _log_needs_review(txn)
    return txn


def charge_cancel(*, transaction_id: uuid.UUID, reason: str, actor: str) -> Transaction:
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
        refusal = selectors.cancel_refusal(txn)
        if refusal:
            raise NotCancelable(f"This payment cannot be canceled: {refusal}.", transaction=txn)
        txn.status = Status.CANCELED
        txn.status_note = reason[:500]
        txn.source = ""
        txn.next_retry_at = None
        txn.review_reason = ""
        txn.save(
            update_fields=["status", "status_note", "source", "next_retry_at", "review_reason", "updated_at"]
        )
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


def _skipped(transaction_id: uuid.UUID, detail: str) -> ActionResult:
    current = Transaction.objects.filter(pk=transaction_id).values_list("status", flat=True).first()
    if current is None:
        detail = "no such transaction"
    return ActionResult(transaction_id, ActionOutcome.SKIPPED, current or "", detail)


def _claim(
    candidates: QuerySet[Transaction], *, skip_ids: Collection[uuid.UUID] = (), for_charge: bool = False
) -> Transaction | None:
    """Move the first of `candidates` to pending, so that nobody else works on it (`for_charge`:
    and mark when its charge call begins).

    Returns the row as it was before the claim, so that it can be put back, or None
    when no candidate is left. The conditional UPDATE re-checks the candidates'
    conditions, so two processes never both claim a row; where the database has
    SKIP LOCKED (MariaDB 10.6+), concurrent runs also pass each other's rows by.
    """
    queryset = candidates.exclude(pk__in=list(skip_ids)) if skip_ids else candidates
    while True:
        if connection.features.has_select_for_update_skip_locked:
            with transaction.atomic():
                rows = list(queryset.select_for_update(skip_locked=True)[:1])
                claimed = _claim_first(candidates, rows, for_charge=for_charge)
        else:
            rows = list(queryset[:CLAIM_CANDIDATES])
            claimed = _claim_first(candidates, rows, for_charge=for_charge)
        if claimed is not None or not rows:
            return claimed


def _claim_first(
    candidates: QuerySet[Transaction], rows: list[Transaction], *, for_charge: bool
) -> Transaction | None:
    for txn in rows:
        now = timezone.now()
        changes = {"status": Status.PENDING, "updated_at": now}
        if for_charge:
            changes["charge_started_at"] = now
        if candidates.filter(pk=txn.pk).update(**changes) == 1:
            return txn
    return None  # another process got there first


def _put_back(
    claimed: Transaction,
    *,
    attempts: tuple[provider.Attempt, ...] = (),
    kind: str = "lookup",
    review_reason: str = "",
) -> Transaction:
    """Put a claimed row back as it was (status, error and updated_at), keeping its attempt log."""
    with transaction.atomic():
        txn = Transaction.objects.select_for_update().get(pk=claimed.pk)
        record_attempts(txn=txn, attempts=attempts, kind=kind)
        if txn.status == Status.PENDING:
            restored = {
                name: getattr(claimed, name)
                for name in ("status", "error_type", "error_code", "error_message", "charge_started_at")
            }
            restored.update(review_reason=review_reason or txn.review_reason, updated_at=claimed.updated_at)
            Transaction.objects.filter(pk=claimed.pk).update(**restored)
            _assign(txn, restored)
    if review_reason:
        _log_needs_review(txn)
    return txn


def _call_provider_for_claim(
    claimed: Transaction, call: Callable[[provider.ProviderClient], ProviderResult], *, kind: str
) -> ProviderResult:
    """Call the provider for a claimed row, with no database connection held.

    Interrupted before the call (Ctrl-C twice, say): the row is put back. Interrupted during a
    charge: the provider may have charged, so the row becomes unknown for reconcile_payments;
    during a lookup nothing was charged, so the row is put back.
    """
    called = False
    try:
        release_db_connection()
        client = provider.get_client()
        called = True
        if kind == "charge":
            claimed.charge_sent = True  # from here on, the provider may have charged it
        return call(client)
    except BaseException:
        if called and kind == "charge":
            _mark_interrupted(claimed)
        else:
            _put_back(claimed)
        raise


def _mark_interrupted(claimed: Transaction) -> None:
    Transaction.objects.filter(pk=claimed.pk, status=Status.PENDING).update(
        **_interrupted_fields(claimed), next_retry_at=None
    )
    log_event(
        logger,
        "payment.call_interrupted",
        level=logging.WARNING,
        message="Interrupted during the provider call; the outcome is unknown until reconciled",
        transaction_id=str(claimed.pk),
    )


def _isolated(claimed: Transaction, actor: str, work: Callable[..., ActionResult]) -> ActionResult:
    """Run one claimed row's work; an unexpected error flags that row for review and is
    reported as its result, so one bad row never stops a batch."""
    try:
        return work(claimed, actor=actor)
    except Exception as exc:
        log_event(
            logger,
            "payment.command_error",
            level=logging.ERROR,
            message=f"{actor}: error on one transaction; flagged for review, going on",
            exc_info=True,
            transaction_id=str(claimed.pk),
            actor=actor,
        )
        reason = f"{actor} hit an error ({type(exc).__name__}); see the log"
        current = Transaction.objects.filter(pk=claimed.pk).values_list("status", flat=True).first()
        if current == Status.PENDING and getattr(claimed, "charge_sent", False):
            _mark_interrupted(claimed)  # the charge may have been made: unknown, never "failed"
            Transaction.objects.filter(pk=claimed.pk).update(review_reason=reason)
        elif current == Status.PENDING:
            _put_back(claimed, review_reason=reason)
        else:
            Transaction.objects.filter(pk=claimed.pk).update(review_reason=reason)
        return ActionResult(claimed.pk, ActionOutcome.ERROR, claimed.status, reason)


def support_user_create(*, username: str, password: str, email: str = "") -> tuple[AbstractBaseUser, bool]:
    """A staff user in the "Payment support" group (which is created if missing)."""
    group, _ = Group.objects.get_or_create(name=SUPPORT_GROUP_NAME)
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label="payments", codename__in=SUPPORT_PERMISSIONS)
    )
    user, created = get_user_model().objects.get_or_create(username=username, defaults={"email": email})
    user.is_staff = True
    user.set_password(password)
    user.save()
    user.groups.add(group)
    return user, created
