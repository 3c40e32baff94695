"""Operations on payments: the API, the admin and the commands all call these.

The rule that shapes this module: no database transaction, and no pooled
connection, is held while the provider is called. Each operation is
"short write, release the connection, call the provider, short write".
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from payments import provider, selectors
from payments.breaker import CircuitOpen
from payments.db import release_db_connection
from payments.exceptions import (
    CardDeclined,
    ChargeCanceled,
    IdempotencyConflict,
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
    _ensure_provider_available()
    try:
        with transaction.atomic():
            txn = Transaction.objects.create(
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
        # Another request with the same key inserted first.
        existing = selectors.transaction_for_key(client=client, idempotency_key=idempotency_key or "")
        if existing is None:
            raise
        return _resume(existing, request.fingerprint())
    return _call_provider_and_settle(txn)


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
        _ensure_provider_available()
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


def _call_provider_and_settle(txn: Transaction) -> Charged:
    # The pending row is committed; give the connection back before the
    # provider call, which may take seconds (the incident's root cause).
    release_db_connection()
    result = provider.get_client().charge(
        provider_key=txn.provider_idempotency_key,
        amount=txn.amount,
        currency=txn.currency,
        source=txn.source,
        reference=str(txn.pk),
        description=txn.description,
    )
    settled = settle(transaction_id=txn.pk, result=result)
    return raise_for_status(settled, unavailable_retry_after_s=result.retry_after_s)


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
        if result.attempts and result.outcome in (Outcome.SUCCEEDED, Outcome.DECLINED):
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
