"""Settlement: recording what the provider said, under a row lock, in one short transaction.

The rules of payments.outcomes: a definitive answer settles any row that is not final; after a
charge call, anything else leaves the row unknown if this call or any earlier one may have
charged (unknown is sticky), failed otherwise. Every path that records an answer (the charge
path, support actions, the batch commands) comes through here.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from core import metrics
from core.db import release_db_connection, set_prefetched
from core.events import log_event
from payments import failpoints, provider, selectors, transitions
from payments.errors import PaymentError, ProviderUnavailable
from payments.models import PaymentAttempt, Transaction
from payments.provider import Outcome, ProviderResult
from payments.services import client_events
from payments.services.answers import answer_event, apply_answer
from payments.transitions import Actor, Event

logger = logging.getLogger("payments.services")  # one logger name for all the services, as before the split

Status = Transaction.Status
T = TypeVar("T")


def interrupted_fields(txn: Transaction) -> dict[str, Any]:
    """What makes a row whose provider call was cut off `unknown`; an earlier unknown cause stays."""
    fields: dict[str, Any] = {"status": Status.UNKNOWN}
    if txn.error_type != Transaction.ErrorType.OUTCOME_UNKNOWN:
        fields.update(
            error_type=Transaction.ErrorType.OUTCOME_UNKNOWN,
            error_code="interrupted",
            error_message="The process sending it stopped during the provider call.",
        )
    return fields


def assign(txn: Transaction, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        setattr(txn, name, value)


@contextlib.contextmanager
def provider_call_slot(
    refused: type[PaymentError] = ProviderUnavailable, *, before_waiting: Callable[[], None] | None = None
) -> Iterator[None]:
    """Refuse at once, writing nothing, when the provider cannot take the call now (`refused`:
    the error to raise, a charge's or a refund's; `before_waiting`: run first when every slot
    is taken, and what it raises is raised, holding no slot).

    Either the breaker is open, or this process already has
    PAYMENT_MAX_CONCURRENT_CALLS requests waiting on the provider (for PAYMENT_SLOT_WAIT_MS,
    with no database connection held, a spike waits for a slot to free): a hanging provider
    must not take every thread, or /health/ and the admin stop answering.
    """

    def give_back() -> None:
        if before_waiting is not None:
            before_waiting()
        release_db_connection()

    try:
        slot = provider.get_client().resilience.call_slot(
            wait_s=settings.PAYMENT_SLOT_WAIT_MS / 1000, before_waiting=give_back
        )
        with slot:
            yield
    except provider.CircuitOpen as exc:
        raise refused(code="circuit_open", retry_after_s=exc.retry_after_s) from exc
    except provider.ProviderBusy as exc:
        raise refused(code="provider_busy", retry_after_s=1) from exc


def ensure_provider_available() -> None:
    """Raise ProviderUnavailable, claiming nothing, while the circuit breaker is open."""
    try:
        provider.get_client().resilience.admit()
    except provider.CircuitOpen as exc:
        raise ProviderUnavailable(code="circuit_open", retry_after_s=exc.retry_after_s) from exc


def count_charge(answer_name: str) -> None:
    """A charge sent to the provider, by the API's answer (core.metrics.CHARGE_OUTCOMES)."""
    metrics.CHARGES.labels(answer_name).inc()


def alarm_misconfigured(result: ProviderResult) -> None:
    provider.note_misconfigured(result.http_status)
    log_event(
        logger,
        "provider.misconfigured",
        level=logging.ERROR,
        message=f"The provider refused our request with HTTP {result.http_status}: check "
        "PAYMENT_API_KEY and PAYMENT_SERVICE_URL. No payment is sent until this is fixed.",
        http_status=result.http_status,
    )


# Answers after which the provider holds no charge and nothing will send one: the row goes back.
NOTHING_SENT = frozenset({Outcome.UNAVAILABLE, Outcome.MISCONFIGURED})

# Pauses between the tries of settle on a database error (three tries in all).
SETTLE_BACKOFF_S = (0.2, 0.5)


def retried_on_database_error(write: Callable[[], T]) -> T:
    """`write()` (recording a provider's answer), tried again on a database error with a fresh
    connection each time; the last try's error is raised."""
    for pause_s in SETTLE_BACKOFF_S:
        try:
            return write()
        except DatabaseError:
            release_db_connection()
            time.sleep(pause_s)
    return write()


def settle_with_retry(
    *, claimed: Transaction, result: ProviderResult, by: Actor, inserted: bool = False
) -> Transaction:
    """settle(), tried again on a database error with a fresh connection each time."""
    return retried_on_database_error(lambda: settle(claimed=claimed, result=result, by=by, inserted=inserted))


class Fenced(Exception):
    """This claim lost its row (another process took it over after the window): it wrote nothing."""

    def __init__(self, row: Transaction) -> None:
        super().__init__(f"payment {row.pk} is no longer this claim's")
        self.row = row


def owns(row: Transaction, claimed: Transaction) -> bool:
    """Whether the claim `claimed` still owns `row` (read under its lock): the fence."""
    return row.status == Status.PENDING and row.claim_token == claimed.claim_token


def fenced(row: Transaction, claimed: Transaction, *, what: str) -> Fenced:
    log_event(
        logger,
        "payment.claim_fenced",
        level=logging.WARNING,
        message=f"Another process took this payment over; {what} was not written",
        transaction_id=str(row.pk),
        status=row.status,
        dropped=what,
    )
    return Fenced(row)


def send_charge(txn: Transaction, client: provider.PaymentProvider) -> ProviderResult:
    # The same provider key and body on every call: the provider charges a key at most once.
    return client.charge(
        provider_key=txn.provider_idempotency_key,
        amount=txn.amount,
        currency=txn.currency,
        source=txn.source,
        reference=str(txn.pk),
        description=txn.description,
    )


def record_attempts(
    *,
    txn: Transaction | Any,
    attempts: tuple[provider.Attempt, ...],
    kind: str,
    refund: Any = None,
    first_number: int | None = None,
) -> None:
    """Append the attempts to the charge's attempt log (`txn`: the charge or its id; `refund`:
    the refund they were made for, numbered with the charge's own; `first_number`: the first
    one's number when the caller knows it, else counted)."""
    if not attempts:
        return
    if first_number is None:
        first_number = PaymentAttempt.objects.filter(transaction=txn).count() + 1
    PaymentAttempt.objects.bulk_create(
        PaymentAttempt(
            transaction_id=getattr(txn, "pk", txn),
            refund=refund,
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


def settle(
    *, claimed: Transaction, result: ProviderResult, by: Actor, kind: str = "charge", inserted: bool = False
) -> Transaction:
    """Record the attempts and the outcome in one short transaction, under a row lock.

    The rules of payments.outcomes, as the transition table writes them: a definitive answer
    settles any row that is not final, and a success even a canceled one; after a charge call,
    anything else leaves the row unknown if this call or any earlier one may have charged
    (unknown is sticky), failed otherwise. A claim that lost its row (the fence) records only
    the provider's facts, and raises Fenced for anything else, having written nothing.

    `inserted`: `claimed` is the row as the charge path inserted it; while the row still is so,
    the answer is written without reading it first, else it is read under its lock as always.
    """
    with transaction.atomic():
        failpoints.hit("settle")
        settled = _settle_as_inserted(claimed, result, by=by) if inserted and kind == "charge" else None
        txn, before_status = settled or _settle_locked(claimed, result, by=by, kind=kind)
    if kind == "charge":
        count_charge(transitions.answer_name(txn))
    _log_settled(txn, before_status, result)
    return txn


def _settle_locked(
    claimed: Transaction, result: ProviderResult, *, by: Actor, kind: str
) -> tuple[Transaction, str]:
    txn = Transaction.objects.select_for_update().get(pk=claimed.pk)
    event = answer_event(txn, result, kind=kind)
    if not owns(txn, claimed) and event not in transitions.FACTS:
        raise fenced(txn, claimed, what=f"its {result.outcome} answer")
    record_attempts(txn=txn, attempts=result.attempts, kind=kind)
    before_status, before_review = txn.status, txn.needs_review
    apply_answer(txn, claimed, result, event=event, by=by, kind=kind)
    txn.save()
    client_events.record_charge_change(txn, before_status=before_status, before_review=before_review)
    return txn, before_status


# What an answer is read against (answer_event, apply_answer) besides the fence (status, token).
READ_BY_ANSWER = ("attempts", "error_type", "error_code", "review_reason")


def _settle_as_inserted(
    claimed: Transaction, result: ProviderResult, *, by: Actor
) -> tuple[Transaction, str] | None:
    """Write the answer to the row the charge path inserted with one conditional UPDATE: it
    matches only while the row is pending under this claim's token and holds, in every field
    the answer is read against, what was inserted, and it takes the row lock until commit, as
    SELECT ... FOR UPDATE would. None, having written nothing: the row changed (a provider
    event settled it, another process took it over); the caller reads it under its lock.

    No other claim took the row (its token is this one's) and no provider fact moved it (it is
    pending), so no other process logged an attempt of it, and it was never refunded (a refund
    needs a succeeded charge, and succeeded is final): the attempts are numbered from 1, and
    its event shows it with no refunds, without a query."""
    txn = copy.copy(claimed)
    apply_answer(txn, claimed, result, event=answer_event(txn, result, kind="charge"), by=by, kind="charge")
    txn.updated_at = timezone.now()
    changes = {
        field.attname: getattr(txn, field.attname)
        for field in Transaction._meta.concrete_fields
        if getattr(txn, field.attname) != getattr(claimed, field.attname)
    }  # what apply_answer set, and updated_at
    unchanged = {name: getattr(claimed, name) for name in ("status", "claim_token", *READ_BY_ANSWER)}
    fenced_row = Transaction.objects.filter(pk=claimed.pk, **unchanged)
    if claimed.status != Status.PENDING or fenced_row.update(**changes) != 1:
        return None
    record_attempts(txn=txn, attempts=result.attempts, kind="charge", first_number=1)
    with _without_refunds(txn):
        client_events.record_charge_change(
            txn, before_status=Status.PENDING, before_review=claimed.needs_review
        )
    return txn, Status.PENDING


@contextlib.contextmanager
def _without_refunds(txn: Transaction) -> Iterator[None]:
    """`txn` with no refunds, read with no query, while its event is written; then taken off:
    the row returned is the caller's, who may refund it, and reads its refunds when shown."""
    set_prefetched(txn, "refunds", [])
    try:
        yield
    finally:
        del txn._prefetched_objects_cache


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
    if txn.status == Status.SUCCEEDED and txn.review_reason:
        log_event(
            logger,
            "payment.charged_late",
            level=logging.ERROR,
            message=f"Charged after the service gave up on it ({txn.review_reason}): support must act",
            previous_status=previous_status,
            provider_charge_id=txn.provider_charge_id,
            reason=txn.review_reason,
            **fields,
        )
    elif txn.status == Status.SUCCEEDED:
        log_event(logger, "payment.succeeded", message="Payment succeeded", **fields)
    elif txn.error_code == "answer_mismatch":
        log_event(
            logger,
            "payment.answer_mismatch",
            level=logging.ERROR,
            message=f"The provider's answer is not for this charge ({txn.error_message}); flagged for review",
            mismatch=txn.error_message,
            **fields,
        )
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
            log_needs_review(txn)
        else:
            log_event(
                logger,
                "payment.retry_scheduled",
                message=f"Retry scheduled at {txn.next_retry_at.isoformat()}",
                next_retry_at=txn.next_retry_at.isoformat(),
                **fields,
            )


def log_needs_review(txn: Transaction) -> None:
    log_event(
        logger,
        "payment.needs_review",
        level=logging.WARNING,
        message=f"Needs review: {txn.review_reason}",
        transaction_id=str(txn.pk),
        attempt=txn.attempts,
        reason=txn.review_reason,
    )


def settle_not_charged(claimed: Transaction, result: ProviderResult) -> Transaction | None:
    """The provider has no charge for the key: failed, and safe to send again, if no attempt
    can still be in flight by the database's clock, read from the locked row (never from the
    claim's copy, which another process may have made stale). None: one still may be, and
    nothing was written. Raises Fenced if the claim lost its row."""
    with transaction.atomic():
        txn = Transaction.objects.select_for_update().get(pk=claimed.pk)
        if not owns(txn, claimed):
            raise fenced(txn, claimed, what="its lookup's 'no such charge'")
        if not Transaction.objects.filter(transitions.window_passed_q(), pk=txn.pk).exists():
            return None
        record_attempts(txn=txn, attempts=result.attempts, kind="lookup")
        before_status, before_review = txn.status, txn.needs_review
        if transitions.move(txn.status, Event.NOT_FOUND, by=Actor.RECONCILE) == Status.FAILED:
            txn.status = Status.FAILED
            txn.error_type = Transaction.ErrorType.PROVIDER_ERROR
            txn.error_code = selectors.NOT_CHARGED_CODE
            txn.error_message = "The provider made no charge with this key; sending it again is safe."
            txn.next_retry_at = timezone.now() if transitions.attempts_left(txn) else None
            txn.review_reason = "" if txn.next_retry_at else f"not charged after {txn.attempts} tries"
            txn.save()
            client_events.record_charge_change(txn, before_status=before_status, before_review=before_review)
    if txn.needs_review:
        log_needs_review(txn)
    return txn
