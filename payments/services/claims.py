"""Claims: how one process takes a row to work on, and gives it back.

A claim moves a row to pending with a conditional UPDATE that re-checks the row's conditions,
so two processes never both claim it; where the database has SKIP LOCKED (MariaDB 10.6+),
concurrent runs also pass each other's rows by. The provider is called with no database
connection held; whatever interrupts the work, the row is put back or, when a charge may
have been sent, left unknown.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from core.db import DatabaseNow, release_db_connection
from core.events import log_event
from payments import provider, transitions
from payments.models import Transaction
from payments.provider import ProviderResult
from payments.services import client_events
from payments.services.settlement import (
    Fenced,
    assign,
    fenced,
    interrupted_fields,
    log_needs_review,
    owns,
    record_attempts,
)
from payments.transitions import Actor, Event

logger = logging.getLogger("payments.services")  # one logger name for all the services, as before the split

Status = Transaction.Status


# Without row locks (SQLite) a claim can lose to another process; try a few candidates per query.
CLAIM_CANDIDATES = 10


class ActionOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    FAILED = "failed"  # sent again; the provider failed again (not charged)
    UNKNOWN = "unknown"  # sent again or looked up; still not known whether it was charged
    NOT_CHARGED = "not_charged"  # the provider made no charge: failed and retryable
    NOT_REFUNDED = "not_refunded"  # reconcile_refunds: no refund was made (failed; may be sent again)
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


OUTCOME_OF_STATUS = {
    Status.SUCCEEDED: ActionOutcome.SUCCEEDED,
    Status.DECLINED: ActionOutcome.DECLINED,
    Status.FAILED: ActionOutcome.FAILED,
    Status.UNKNOWN: ActionOutcome.UNKNOWN,
}


def skipped(transaction_id: uuid.UUID, detail: str) -> ActionResult:
    current = Transaction.objects.filter(pk=transaction_id).values_list("status", flat=True).first()
    if current is None:
        detail = "no such transaction"
    return ActionResult(transaction_id, ActionOutcome.SKIPPED, current or "", detail)


def claim(
    candidates: QuerySet[Transaction],
    *,
    by: Actor,
    skip_ids: Collection[uuid.UUID] = (),
    for_charge: bool = False,
    table: dict[tuple[str, Event], transitions.Move] = transitions.TABLE,
) -> Transaction | None:
    """Move the first of `candidates` to pending, so that nobody else works on it (`for_charge`:
    and mark when its charge call begins).

    Returns the row as it was before the claim, so that it can be put back, or None
    when no candidate is left. The conditional UPDATE re-checks the candidates'
    conditions, so two processes never both claim a row; where the database has
    SKIP LOCKED (MariaDB 10.6+), concurrent runs also pass each other's rows by. Only rows in a
    status the transition table (`table`: a refund's for refunds) lets `by` claim are candidates.
    """
    candidates = candidates.filter(status__in=transitions.claimable(by=by, table=table))
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
        changes = claim_fields(for_charge=for_charge)
        if candidates.filter(pk=txn.pk).update(**changes) == 1:
            txn.claim_token = changes["claim_token"]  # the rest stays as before the claim
            return txn
    return None  # another process got there first


def claim_fields(*, for_charge: bool) -> dict[str, Any]:
    """What a claim writes: pending, a new fence token, and when, by the database's clock."""
    changes: dict[str, Any] = {
        "status": Status.PENDING,
        "updated_at": timezone.now(),
        "claim_token": uuid.uuid4().hex,
        "claimed_at": DatabaseNow(),
    }
    if for_charge:
        changes["charge_started_at"] = DatabaseNow()
    return changes


def put_back(
    claimed: Transaction,
    *,
    by: Actor,
    attempts: tuple[provider.Attempt, ...] = (),
    kind: str = "lookup",
    review_reason: str = "",
) -> Transaction:
    """Put a claimed row back as it was (status, error and updated_at), keeping its attempt log."""
    with transaction.atomic():
        txn = Transaction.objects.select_for_update().get(pk=claimed.pk)
        if not owns(txn, claimed):
            raise fenced(txn, claimed, what="putting it back")
        before_status, before_review = txn.status, txn.needs_review
        if transitions.move(txn.status, Event.PUT_BACK, by=by) == transitions.BEFORE_CLAIM:
            record_attempts(txn=txn, attempts=attempts, kind=kind)
            restored = {
                name: getattr(claimed, name)
                for name in ("status", "error_type", "error_code", "error_message", "charge_started_at")
            }
            restored.update(review_reason=review_reason or txn.review_reason, updated_at=claimed.updated_at)
            Transaction.objects.filter(pk=claimed.pk).update(**restored)
            assign(txn, restored)
            client_events.record_charge_change(txn, before_status=before_status, before_review=before_review)
    if review_reason:
        log_needs_review(txn)
    return txn


def call_provider_for_claim(
    claimed: Transaction, call: Callable[[provider.PaymentProvider], ProviderResult], *, kind: str, by: Actor
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
            mark_interrupted(claimed, by=by)
        else:
            with contextlib.suppress(Fenced):
                put_back(claimed, by=by)
        raise


def mark_interrupted(claimed: Transaction, *, by: Actor) -> None:
    """A charge call was cut off: the provider may have charged, so the row becomes unknown."""
    fields = interrupted_fields(claimed)
    fields["status"] = transitions.move(Status.PENDING, Event.OUTCOME_UNKNOWN, by=by)
    owned = Transaction.objects.filter(pk=claimed.pk, status=Status.PENDING, claim_token=claimed.claim_token)
    if not owned.update(**fields, next_retry_at=None):
        return  # another process took it over: it is that process's to settle
    log_event(
        logger,
        "payment.call_interrupted",
        level=logging.WARNING,
        message="Interrupted during the provider call; the outcome is unknown until reconciled",
        transaction_id=str(claimed.pk),
    )


def isolated(
    claimed: Transaction, actor: str, work: Callable[..., ActionResult], *, by: Actor
) -> ActionResult:
    """Run one claimed row's work; an unexpected error flags that row for review and is
    reported as its result, so one bad row never stops a batch."""
    try:
        return work(claimed, actor=actor)
    except Fenced as exc:
        return ActionResult(claimed.pk, ActionOutcome.SKIPPED, exc.row.status, "another process took it over")
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
            mark_interrupted(claimed, by=by)  # the charge may have been made: unknown, never "failed"
            flag_for_review(claimed.pk, reason)
        elif current == Status.PENDING:
            with contextlib.suppress(Fenced):
                put_back(claimed, by=by, review_reason=reason)
        else:
            flag_for_review(claimed.pk, reason)
        return ActionResult(claimed.pk, ActionOutcome.ERROR, claimed.status, reason)


def flag_for_review(transaction_id: uuid.UUID, reason: str) -> None:
    """Set a row's review reason under its lock, with its `charge.needs_review` event if it now needs one."""
    with transaction.atomic():
        txn = Transaction.objects.select_for_update().get(pk=transaction_id)
        before_status, before_review = txn.status, txn.needs_review
        Transaction.objects.filter(pk=txn.pk).update(review_reason=reason)  # updated_at stays, as before
        txn.review_reason = reason
        client_events.record_charge_change(txn, before_status=before_status, before_review=before_review)
