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
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from payments import provider, selectors
from payments.breaker import CircuitOpen
from payments.db import release_db_connection
from payments.exceptions import (
    CardDeclined,
    ChargeCanceled,
    IdempotencyConflict,
    InvalidRequest,
    ProviderFailed,
    ProviderTimeout,
    ProviderUnavailable,
)
from payments.models import PaymentAttempt, Transaction, mask_source
from payments.provider import Outcome, ProviderResult
from paymentsite import metrics
from paymentsite.log import log_event

logger = logging.getLogger(__name__)

Status = Transaction.Status

RETRY_BASE_DELAY_S = 60
RETRY_MAX_DELAY_S = 3600

_FAILURE_EVENTS = {
    Outcome.TIMEOUT: "payment.provider_timeout",
    Outcome.CONNECTION_ERROR: "payment.connection_error",
    Outcome.PROVIDER_ERROR: "payment.provider_error",
    Outcome.UNAVAILABLE: "payment.provider_unavailable",
}


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

    With an idempotency key, a completed charge is replayed, a failed one is
    tried again with the same provider key, and one in flight is a conflict.
    """
    if idempotency_key:
        existing = selectors.transaction_for_key(client=client, idempotency_key=idempotency_key)
        if existing is not None:
            return _resume(existing, request.fingerprint())
    with _provider_call_slot():
        txn = _insert_pending(client=client, request=request, idempotency_key=idempotency_key)
        if txn is not None:
            return _call_provider_and_settle(txn)
    # Another request with the same key inserted first.
    existing = selectors.transaction_for_key(client=client, idempotency_key=idempotency_key or "")
    if existing is None:
        raise IdempotencyConflict("A request with this Idempotency-Key is still in progress.")
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
                idempotency_key=idempotency_key or None,
                request_fingerprint=request.fingerprint(),
                status=Status.PENDING,
            )
    except IntegrityError:
        if not idempotency_key:
            raise
        return None


def _resume(txn: Transaction, fingerprint: str) -> Charged:
    if txn.request_fingerprint != fingerprint:
        raise IdempotencyConflict(
            "This Idempotency-Key was used with a different request body.", code="idempotency_key_reused"
        )
    if txn.status == Status.PENDING:
        raise IdempotencyConflict(
            "A request with this Idempotency-Key is still in progress.",
            code="request_in_progress",
            transaction=txn,
        )
    if txn.status == Status.FAILED:
        with _provider_call_slot():
            if not _claim_failed(txn):
                raise IdempotencyConflict(
                    "A request with this Idempotency-Key is still in progress.",
                    code="request_in_progress",
                    transaction=selectors.transaction_get(transaction_id=txn.pk),
                )
            return _call_provider_and_settle(txn)
    return raise_for_status(txn, replayed=True)


def _claim_failed(txn: Transaction) -> bool:
    """Move failed -> pending with a conditional UPDATE, so only one caller sends it."""
    claimed = Transaction.objects.filter(pk=txn.pk, status=Status.FAILED).update(
        status=Status.PENDING, updated_at=timezone.now()
    )
    return claimed == 1


def _ensure_provider_available() -> None:
    try:
        provider.get_client().breaker.check()
    except CircuitOpen as exc:
        raise ProviderUnavailable(
            "The payment provider is unavailable. Nothing was charged; try again later.",
            retry_after_s=exc.retry_after_s,
        ) from exc


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
        raise ProviderUnavailable(
            "Too many payments are waiting on the payment provider. Nothing was charged; try again shortly.",
            code="provider_busy",
            retry_after_s=1,
        )
    try:
        yield
    finally:
        slots.release()


def _call_provider_and_settle(txn: Transaction) -> Charged:
    # The pending row is committed; give the connection back before the
    # provider call, which may take seconds (the incident's root cause).
    release_db_connection()
    result = _charge(txn, provider.get_client())
    settled = settle(transaction_id=txn.pk, result=result)
    return raise_for_status(settled, unavailable_retry_after_s=result.retry_after_s)


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
            message=attempt.message,
        )
        for offset, attempt in enumerate(attempts)
    )


def settle(*, transaction_id: uuid.UUID, result: ProviderResult, kind: str = "charge") -> Transaction:
    """Record the attempts and the outcome in one short transaction, under a row lock."""
    with transaction.atomic():
        txn = Transaction.objects.select_for_update().get(pk=transaction_id)
        record_attempts(txn=txn, attempts=result.attempts, kind=kind)
        previous_status = txn.status
        if result.outcome == Outcome.SUCCEEDED and txn.can_move_to(Status.SUCCEEDED):
            txn.status = Status.SUCCEEDED
            txn.provider_charge_id = result.charge_id
            txn.error_type = txn.error_code = txn.error_message = ""
            txn.source = ""
            txn.next_retry_at = None
        elif result.outcome == Outcome.DECLINED and txn.can_move_to(Status.DECLINED):
            txn.status = Status.DECLINED
            txn.provider_charge_id = result.charge_id
            txn.error_type = Transaction.ErrorType.CARD_ERROR
            txn.error_code = result.code
            txn.error_message = result.message
            txn.source = ""
            txn.next_retry_at = None
        elif result.outcome in _FAILURE_EVENTS and txn.status == Status.PENDING:
            txn.status = Status.FAILED
            txn.error_type = result.outcome.value
            txn.error_code = result.code or result.outcome.value
            txn.error_message = result.message[:500]
            if result.attempts:
                txn.attempts += 1
                txn.next_retry_at = _next_retry_at(txn.attempts)
            else:
                # Refused by the open breaker: no attempt was made.
                txn.next_retry_at = timezone.now() + timedelta(seconds=max(1, result.retry_after_s))
        if kind == "charge" and result.attempts and result.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED):
            txn.attempts += 1
        txn.save()
    if kind == "charge":
        metrics.CHARGES.labels(result.outcome.value).inc()
    _log_settled(txn, previous_status, result)
    return txn


def _log_settled(txn: Transaction, previous_status: str, result: ProviderResult) -> None:
    fields = {
        "transaction_id": str(txn.pk),
        "attempt": txn.attempts,
        "http_attempts": len(result.attempts),
        "duration_ms": sum(a.duration_ms for a in result.attempts),
        "http_status": result.http_status,
        "amount": txn.amount,
        "currency": txn.currency,
    }
    if txn.status == Status.SUCCEEDED and previous_status != Status.SUCCEEDED:
        log_event(logger, "payment.succeeded", message="Payment succeeded", **fields)
    elif txn.status == Status.DECLINED and previous_status != Status.DECLINED:
        log_event(logger, "payment.declined", message=f"Card declined: {txn.error_code}", **fields)
    elif txn.status == Status.FAILED and result.outcome in _FAILURE_EVENTS:
        log_event(
            logger,
            _FAILURE_EVENTS[result.outcome],
            level=logging.WARNING,
            message=f"Charge failed: {result.message}",
            error_type=txn.error_type,
            **fields,
        )
        if txn.next_retry_at is None:
            log_event(
                logger,
                "payment.needs_review",
                level=logging.WARNING,
                message=f"Gave up after {txn.attempts} attempts; needs review",
                **fields,
            )
        else:
            log_event(
                logger,
                "payment.retry_scheduled",
                message=f"Retry scheduled at {txn.next_retry_at.isoformat()}",
                next_retry_at=txn.next_retry_at.isoformat(),
                **fields,
            )


def raise_for_status(
    txn: Transaction, *, replayed: bool = False, unavailable_retry_after_s: int = 0
) -> Charged:
    """Turn a settled transaction into the API's answer: itself, or a typed error."""
    if txn.status == Status.SUCCEEDED:
        return Charged(transaction=txn, replayed=replayed)
    if txn.status == Status.DECLINED:
        raise CardDeclined(
            txn.error_message or "The card was declined.",
            transaction=txn,
            replayed=replayed,
            extra={"decline_code": txn.error_code},
        )
    if txn.status == Status.CANCELED:
        raise ChargeCanceled(
            "This payment was canceled by support and will not be charged.",
            transaction=txn,
            replayed=replayed,
        )
    if txn.status == Status.PENDING:
        raise IdempotencyConflict(
            "A request with this Idempotency-Key is still in progress.",
            code="request_in_progress",
            transaction=txn,
        )
    if txn.error_type == Transaction.ErrorType.PROVIDER_TIMEOUT:
        raise ProviderTimeout(
            "The payment provider did not answer in time. The payment is being verified; "
            "retrying with the same Idempotency-Key is safe and will not charge twice.",
            transaction=txn,
        )
    if txn.error_type == Transaction.ErrorType.PROVIDER_UNAVAILABLE:
        raise ProviderUnavailable(
            "The payment provider is unavailable. Nothing was charged; try again later.",
            retry_after_s=max(1, unavailable_retry_after_s),
            transaction=txn,
        )
    raise ProviderFailed(
        "The payment provider could not complete the charge. Nothing was charged twice; "
        "retrying with the same Idempotency-Key is safe.",
        code=txn.error_type or "provider_error",
        transaction=txn,
    )


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
    FAILED = "failed"  # sent again; the provider failed again
    NOT_CHARGED = "not_charged"  # the provider made no charge: failed and retryable
    UNAVAILABLE = "unavailable"  # the provider could not be asked: left as it was
    SKIPPED = "skipped"  # not eligible, or another process got there first


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
}


def charge_retry(*, transaction_id: uuid.UUID, actor: str) -> ActionResult:
    """Send a failed transaction again, due or not (support may retry one that needs review)."""
    claimed = _claim(Transaction.objects.filter(pk=transaction_id, status=Status.FAILED))
    if claimed is None:
        return _skipped(transaction_id, "only a failed transaction can be retried")
    return _retry_claimed(claimed, actor=actor)


def charge_retry_next(
    *, max_attempts: int, skip_ids: Collection[uuid.UUID], actor: str
) -> ActionResult | None:
    """Claim the next due failed transaction and send it again; None when none is due.

    Raises ProviderUnavailable, claiming nothing, while the circuit breaker is open.
    """
    _ensure_provider_available()
    candidates = selectors.due_for_retry(now=timezone.now(), max_attempts=max_attempts)
    claimed = _claim(candidates, skip_ids=skip_ids)
    return None if claimed is None else _retry_claimed(claimed, actor=actor)


def _retry_claimed(claimed: Transaction, *, actor: str) -> ActionResult:
    if not claimed.source:
        _release_claim(claimed)
        return _skipped(claimed.pk, "no card token is stored for this transaction")
    result = _call_provider_for_claim(claimed, lambda client: _charge(claimed, client))
    if result.outcome == Outcome.UNAVAILABLE and not result.attempts:
        # Refused by the open breaker: nothing was sent, so nothing changed.
        _release_claim(claimed)
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


def charge_reconcile(*, transaction_id: uuid.UUID, actor: str, stale_after: timedelta) -> ActionResult:
    """Ask the provider what became of one failed transaction, or of a pending one older than
    `stale_after` (younger ones may still be waiting on their provider call)."""
    candidates = Transaction.objects.filter(pk=transaction_id).filter(
        Q(status=Status.FAILED) | Q(status=Status.PENDING, updated_at__lt=timezone.now() - stale_after)
    )
    claimed = _claim(candidates)
    if claimed is None:
        return _skipped(transaction_id, f"only a failed one, or one pending for over {stale_after}")
    return _reconcile_claimed(claimed, actor=actor)


def charge_reconcile_next(
    *, stale_after: timedelta, skip_ids: Collection[uuid.UUID], actor: str
) -> ActionResult | None:
    """Claim the next stale pending or unknown-outcome transaction and look it up.

    Raises ProviderUnavailable, claiming nothing, while the circuit breaker is open.
    """
    _ensure_provider_available()
    candidates = selectors.to_reconcile(updated_before=timezone.now() - stale_after)
    claimed = _claim(candidates, skip_ids=skip_ids)
    return None if claimed is None else _reconcile_claimed(claimed, actor=actor)


def _reconcile_claimed(claimed: Transaction, *, actor: str) -> ActionResult:
    provider_key = claimed.provider_idempotency_key
    result = _call_provider_for_claim(claimed, lambda client: client.lookup(provider_key=provider_key))
    if result.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED):
        settled = settle(transaction_id=claimed.pk, result=result, kind="lookup")
        outcome = _OUTCOME_OF_STATUS[settled.status]
    elif result.outcome == Outcome.NOT_FOUND:
        settled = _settle_not_charged(claimed, result)
        outcome = ActionOutcome.NOT_CHARGED
    else:
        _release_claim(claimed, lookups=result.attempts)
        settled, outcome = claimed, ActionOutcome.UNAVAILABLE
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
    detail = result.message if outcome == ActionOutcome.UNAVAILABLE else settled.error_message
    return ActionResult(claimed.pk, outcome, settled.status, detail)


def _settle_not_charged(claimed: Transaction, result: ProviderResult) -> Transaction:
    """The provider has no charge for the key: failed, and safe to send again."""
    with transaction.atomic():
        txn = Transaction.objects.select_for_update().get(pk=claimed.pk)
        record_attempts(txn=txn, attempts=result.attempts, kind="lookup")
        if txn.status == Status.PENDING:
            txn.status = Status.FAILED
            txn.error_type = claimed.error_type or Transaction.ErrorType.PROVIDER_ERROR
            txn.error_code = selectors.NOT_CHARGED_CODE
            txn.error_message = "The provider made no charge with this key; sending it again is safe."
            txn.next_retry_at = timezone.now() if txn.attempts < settings.PAYMENT_MAX_ATTEMPTS else None
            txn.save()
    return txn


def charge_cancel(*, transaction_id: uuid.UUID, reason: str, actor: str) -> Transaction:
    """Support gives up on a failed payment; it will never be sent again."""
    reason = reason.strip()
    if not reason:
        raise InvalidRequest("A reason is required to cancel a payment.", code="reason_required")
    with transaction.atomic():
        txn = Transaction.objects.select_for_update().get(pk=transaction_id)
        refusal = selectors.cancel_refusal(txn)
        if refusal:
            raise InvalidRequest(refusal, code="not_cancelable", transaction=txn)
        txn.status = Status.CANCELED
        txn.status_note = reason[:500]
        txn.source = ""
        txn.next_retry_at = None
        txn.save(update_fields=["status", "status_note", "source", "next_retry_at", "updated_at"])
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
    return ActionResult(transaction_id, ActionOutcome.SKIPPED, current or "", detail)


def _claim(candidates: QuerySet[Transaction], *, skip_ids: Collection[uuid.UUID] = ()) -> Transaction | None:
    """Move the first of `candidates` to pending, so that nobody else works on it.

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
                claimed = _claim_first(candidates, rows)
        else:
            rows = list(queryset[:CLAIM_CANDIDATES])
            claimed = _claim_first(candidates, rows)
        if claimed is not None or not rows:
            return claimed


def _claim_first(candidates: QuerySet[Transaction], rows: list[Transaction]) -> Transaction | None:
    for txn in rows:
        if candidates.filter(pk=txn.pk).update(status=Status.PENDING, updated_at=timezone.now()) == 1:
            return txn
    return None  # another process got there first


def _release_claim(claimed: Transaction, *, lookups: tuple[provider.Attempt, ...] = ()) -> None:
    """Put a claimed row back as it was (status and updated_at), keeping any lookups in its log."""
    with transaction.atomic():
        txn = Transaction.objects.select_for_update().get(pk=claimed.pk)
        record_attempts(txn=txn, attempts=lookups, kind="lookup")
        Transaction.objects.filter(pk=claimed.pk, status=Status.PENDING).update(
            status=claimed.status, updated_at=claimed.updated_at
        )


def _call_provider_for_claim(
    claimed: Transaction, call: Callable[[provider.ProviderClient], ProviderResult]
) -> ProviderResult:
    """Call the provider for a claimed row; if interrupted before the call, put the row back."""
    called = False
    try:
        # The claim is committed; give the connection back for the length of the call.
        release_db_connection()
        client = provider.get_client()
        called = True
        return call(client)
    except BaseException:
        if not called:
            _release_claim(claimed)
        else:
            log_event(
                logger,
                "payment.call_interrupted",
                level=logging.WARNING,
                message="Interrupted during the provider call; reconcile_payments settles it once stale",
                transaction_id=str(claimed.pk),
            )
        raise


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
