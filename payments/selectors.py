"""Reads shared by the API, the admin, the commands and health."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from payments.models import Transaction


def transaction_for_key(*, client: AbstractBaseUser, idempotency_key: str) -> Transaction | None:
    return Transaction.objects.filter(client=client, idempotency_key=idempotency_key).first()


def transaction_get(*, transaction_id: uuid.UUID) -> Transaction:
    return Transaction.objects.get(pk=transaction_id)


def transactions_for_client(*, client: AbstractBaseUser, status: str | None = None) -> QuerySet[Transaction]:
    queryset = Transaction.objects.filter(client=client).order_by("-created_at", "-pk")
    if status:
        queryset = queryset.filter(status=status)
    return queryset


# A timeout or a broken connection: the provider may have charged, and we do not know.
UNKNOWN_OUTCOME_ERRORS = (
    Transaction.ErrorType.PROVIDER_TIMEOUT,
    Transaction.ErrorType.PROVIDER_CONNECTION_ERROR,
)
# error_code once reconciliation has confirmed that the provider made no charge.
NOT_CHARGED_CODE = "not_charged"


def needs_review_q() -> Q:
    """Failed with no retry scheduled: PAYMENT_MAX_ATTEMPTS is spent, a person must decide."""
    return Q(status=Transaction.Status.FAILED, next_retry_at__isnull=True)


def due_for_retry(*, now: datetime, max_attempts: int) -> QuerySet[Transaction]:
    return Transaction.objects.filter(
        status=Transaction.Status.FAILED, next_retry_at__lte=now, attempts__lt=max_attempts
    ).order_by("next_retry_at", "pk")


def stale_pending(*, updated_before: datetime) -> QuerySet[Transaction]:
    """Pending rows untouched since `updated_before`: their process died during the provider call."""
    return Transaction.objects.filter(status=Transaction.Status.PENDING, updated_at__lt=updated_before)


def unknown_outcome() -> QuerySet[Transaction]:
    return Transaction.objects.filter(
        status=Transaction.Status.FAILED, error_type__in=UNKNOWN_OUTCOME_ERRORS
    ).exclude(error_code=NOT_CHARGED_CODE)


def is_outcome_unknown(txn: Transaction) -> bool:
    return (
        txn.status == Transaction.Status.FAILED
        and txn.error_type in UNKNOWN_OUTCOME_ERRORS
        and txn.error_code != NOT_CHARGED_CODE
    )


def to_reconcile(*, updated_before: datetime) -> QuerySet[Transaction]:
    """What reconcile_payments asks the provider about, oldest first."""
    return (stale_pending(updated_before=updated_before) | unknown_outcome()).order_by("updated_at", "pk")


def cancel_refusal(txn: Transaction) -> str:
    """Why support may not cancel this transaction, or "" when it may."""
    if not txn.can_move_to(Transaction.Status.CANCELED):
        return f"only a failed payment can be canceled; this one is {txn.status}"
    if is_outcome_unknown(txn):
        # Canceling would hide a charge the provider may have made.
        return "the provider may have charged it; reconcile it first"
    return ""
