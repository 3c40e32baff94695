"""Reads shared by the API, the admin, the commands and health."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import F, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce

from core.db import db_value, select_sql, set_prefetched
from payments import transitions
from payments.models import PaymentAttempt, Refund, Transaction


def transaction_for_key(*, client: AbstractBaseUser, idempotency_key: str) -> Transaction | None:
    return Transaction.objects.filter(client=client, idempotency_key=idempotency_key).first()


def charge_shown(*, client: AbstractBaseUser, transaction_id: uuid.UUID) -> Transaction | None:
    """One of `client`'s charges with its attempt log and its refunds, as the API shows one (None:
    no such charge of the client's): three statements by key, with no queryset compiled
    (core.db.select_sql), in the orders the models' Meta give one charge's rows."""
    key = db_value(Transaction, "id", transaction_id)
    where = "WHERE t.client_id = %s AND t.id = %s"
    txn = next(iter(Transaction.objects.raw(select_sql(Transaction, where), [client.pk, key])), None)
    if txn is None:
        return None
    attempts = select_sql(PaymentAttempt, "WHERE t.transaction_id = %s ORDER BY t.number")
    set_prefetched(txn, "attempt_log", PaymentAttempt.objects.raw(attempts, [key]))
    refunds = select_sql(Refund, "WHERE t.transaction_id = %s ORDER BY t.created_at DESC")
    set_prefetched(txn, "refunds", Refund.objects.raw(refunds, [key]))
    return txn


def transaction_get(*, transaction_id: uuid.UUID) -> Transaction:
    return Transaction.objects.get(pk=transaction_id)


def transactions_for_client(*, client: AbstractBaseUser, status: str | None = None) -> QuerySet[Transaction]:
    queryset = (
        Transaction.objects.filter(client=client).prefetch_related("refunds").order_by("-created_at", "-pk")
    )
    if status:
        queryset = queryset.filter(status=status)
    return queryset


# error_code once reconciliation has confirmed that the provider made no charge.
NOT_CHARGED_CODE = "not_charged"


def needs_review_q() -> Q:
    """Not final and flagged: tries ran out, or a command hit an error on it; a person decides."""
    return Q(status__in=NOT_FINAL, review_reason__gt="")


NOT_FINAL = (Transaction.Status.PENDING, Transaction.Status.FAILED, Transaction.Status.UNKNOWN)


def due_for_retry(*, now: datetime) -> QuerySet[Transaction]:
    return Transaction.objects.filter(transitions.due_q(now=now)).order_by("next_retry_at", "pk")


def exhausted_unflagged() -> QuerySet[Transaction]:
    """Failed rows at or past the attempt limit that nobody has been told about yet."""
    return (
        Transaction.objects.filter(status=Transaction.Status.FAILED, review_reason="")
        .exclude(transitions.attempts_left_q())
        .order_by("pk")
    )


def to_reconcile() -> QuerySet[Transaction]:
    """What reconcile_payments asks the provider about, oldest first: unknown outcomes whose last
    charge call started before the window (no attempt can still be in flight, so "no such charge"
    proves none), unknown ones before it on a schedule that backs off (transitions.lookup_due_q:
    a charge found settles at once), unknown ones a provider event asked a lookup for, at once,
    and pending rows abandoned mid-call; by the database's clock. Before the window a lookup that
    finds no charge proves nothing (settlement.settle_not_charged)."""
    asked = Q(status=Transaction.Status.UNKNOWN, lookup_requested_at__isnull=False)
    return (
        Transaction.objects.alias(**transitions.lookup_schedule())
        .filter(overdue_q() | transitions.lookup_due_q() | asked)
        .order_by("updated_at", "pk")
    )


def overdue_q() -> Q:
    """Unknown past the window, or abandoned mid-call: what reconcile must have looked up by now."""
    unknown = Q(status=Transaction.Status.UNKNOWN) & transitions.window_passed_q()
    return unknown | transitions.abandoned_q()


# What waits for a person (the admin's "needs attention" view and its counts on the index).


def attention_to_reconcile() -> QuerySet[Transaction]:
    """Unknown outcomes, and pending rows abandoned mid-call, older than the reconcile window:
    reconcile_payments (or support's Reconcile) should already have asked the provider."""
    return Transaction.objects.filter(overdue_q()).order_by("updated_at", "pk")


def attention_overdue_retries(*, now: datetime, grace: timedelta) -> QuerySet[Transaction]:
    """Failed rows whose automatic retry is more than `grace` late: retry_failed_payments may not run."""
    return due_for_retry(now=now - grace)


def attention_needs_review() -> QuerySet[Transaction]:
    return Transaction.objects.filter(needs_review_q())


def attention_charged_late() -> QuerySet[Transaction]:
    """Charged after the service gave up on it (canceled, or found not charged): a person decides
    whether to refund or keep it; once refunded in full, nothing is left to decide."""
    refunded = (
        Refund.objects.filter(transaction=OuterRef("pk"), status=Refund.Status.SUCCEEDED)
        .values("transaction")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    return (
        Transaction.objects.filter(status=Transaction.Status.SUCCEEDED, review_reason__gt="")
        .annotate(refunded=Coalesce(Subquery(refunded), 0))
        .filter(refunded__lt=F("amount"))
    )
