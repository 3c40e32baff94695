"""The state machine of a payment, and the rules about it, each written once.

`TABLE` is the one table of moves: (status, event) → the status it moves to, and who may
trigger it. Every path that changes a row's status asks it (`move`, `claimable`): the charge
path, the support actions, the batch commands. `manage.py transition_table` renders it into
docs/architecture.md, and a test keeps the two equal.

The rules written many times before live here, as a predicate on one row and, where the
commands and the admin need it, as the same condition in SQL: abandoned, attempts left, due,
cancelable, and `next_step`, what the service will do with a payment on its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, Q

from core.db import DatabaseNow
from payments.models import Transaction

Status = Transaction.Status


class Event(enum.StrEnum):
    CLAIM = "claim"  # a process takes the row to send it or to look it up
    PUT_BACK = "put_back"  # nothing was charged, or a lookup told nothing: as before the claim
    SUCCEEDED = "succeeded"  # the provider says it charged
    DECLINED = "declined"  # the provider refused the card or the request: final
    OUTCOME_UNKNOWN = "outcome_unknown"  # a charge call ended without a definitive answer, or was cut off
    SEND_FAILED = "send_failed"  # a charge call failed in a way that proves nothing was charged
    NOT_FOUND = "not_found"  # a lookup after the window: the provider has no charge for the key
    MISMATCH = "mismatch"  # an answer for another amount, currency or key: proves nothing about ours
    CANCEL = "cancel"  # given up on: never sent again
    PROVIDER_PENDING = "provider_pending"  # refunds: the provider holds it and settles it later


class Actor(enum.StrEnum):
    CLIENT = "client"  # an API client: a charge request (again with its Idempotency-Key), a cancel
    RETRY = "retry"  # retry_failed_payments, the admin's Retry
    RECONCILE = "reconcile"  # reconcile_payments, the admin's Reconcile
    SUPPORT = "support"  # a person in the admin: Cancel…
    PROVIDER = "provider"  # the provider's own event (POST /webhooks/provider): reports facts only


ACTOR_NAMES = {
    Actor.CLIENT: "API client",
    Actor.RETRY: "retry_failed_payments, admin Retry",
    Actor.RECONCILE: "reconcile_payments, admin Reconcile",
    Actor.SUPPORT: "admin Cancel…",
    Actor.PROVIDER: "provider event",
}

# Put back: the status the row had before its claim (failed or unknown).
BEFORE_CLAIM = "before the claim"


@dataclass(frozen=True)
class Move:
    to: str
    by: frozenset[Actor]
    why: str


SENDERS = frozenset({Actor.CLIENT, Actor.RETRY})
ANSWERED = frozenset({Actor.CLIENT, Actor.RETRY, Actor.RECONCILE})
# Who may report a provider's fact (a success or a decline): also the provider's own event.
REPORTED = ANSWERED | {Actor.PROVIDER}


def _answers(why: str) -> dict[Event, Move]:
    """A definitive answer from the provider settles any row that is not final."""
    return {
        Event.SUCCEEDED: Move(Status.SUCCEEDED, REPORTED, why),
        Event.DECLINED: Move(Status.DECLINED, REPORTED, why),
    }


TABLE: dict[tuple[str, Event], Move] = {
    **{(Status.PENDING, event): move for event, move in _answers("the answer to this claim's call").items()},
    (Status.PENDING, Event.OUTCOME_UNKNOWN): Move(
        Status.UNKNOWN,
        SENDERS,
        "no definitive answer, or an earlier call may have charged (unknown is sticky)",
    ),
    (Status.PENDING, Event.SEND_FAILED): Move(
        Status.FAILED, SENDERS, "nothing was charged; sent again at next_retry_at while tries are left"
    ),
    (Status.PENDING, Event.MISMATCH): Move(
        Status.UNKNOWN, ANSWERED, "the answer is not for this charge: unknown, flagged for review"
    ),
    (Status.PENDING, Event.NOT_FOUND): Move(
        Status.FAILED,
        frozenset({Actor.RECONCILE}),
        "the provider has no charge and no attempt can be in flight",
    ),
    (Status.PENDING, Event.PUT_BACK): Move(
        BEFORE_CLAIM, ANSWERED, "nothing was sent (breaker, credentials), or a lookup told nothing"
    ),
    (Status.PENDING, Event.CLAIM): Move(
        Status.PENDING,
        frozenset({Actor.CLIENT, Actor.RECONCILE}),
        "abandoned mid-call (its process died): becomes unknown when put back",
    ),
    (Status.FAILED, Event.CLAIM): Move(Status.PENDING, SENDERS, "sent again with the same provider key"),
    **{(Status.FAILED, event): move for event, move in _answers("a late answer").items()},
    (Status.FAILED, Event.CANCEL): Move(
        Status.CANCELED, frozenset({Actor.CLIENT, Actor.SUPPORT}), "known not charged: given up on"
    ),
    (Status.UNKNOWN, Event.CLAIM): Move(
        Status.PENDING,
        frozenset({Actor.CLIENT, Actor.RECONCILE}),
        "sent again with the same key (client), or looked up (reconcile)",
    ),
    **{(Status.UNKNOWN, event): move for event, move in _answers("a late answer").items()},
    # A provider's success is a fact, recorded whatever the row's state: never dropped.
    (Status.CANCELED, Event.SUCCEEDED): Move(
        Status.SUCCEEDED, REPORTED, "charged after all (an attempt outlived the cancel): flagged for review"
    ),
}

# What the provider says happened to this charge: recorded even by a claim that lost its row.
FACTS = frozenset({Event.SUCCEEDED, Event.DECLINED})


class ActorNotAllowed(Exception):
    """A code path triggered a move the table does not give it: a bug, never a user's error."""


def move(status: str, event: Event, *, by: Actor, table: dict[tuple[str, Event], Move] = TABLE) -> str | None:
    """The status `event` moves a row in `status` to, or None when the table has no such move
    (the row stays as it is). `table`: TABLE for charges, REFUND_TABLE for refunds."""
    found = table.get((status, event))
    if found is None:
        return None
    if by not in found.by:
        raise ActorNotAllowed(f"{by} may not {event} a {status} {'payment' if table is TABLE else 'refund'}")
    return found.to


def claimable(*, by: Actor, table: dict[tuple[str, Event], Move] = TABLE) -> tuple[str, ...]:
    """The statuses `by` may claim a row from."""
    return tuple(
        status for (status, event), found in table.items() if event == Event.CLAIM and by in found.by
    )


def render_table(table: dict[tuple[str, Event], Move] = TABLE, names: dict[Actor, str] = ACTOR_NAMES) -> str:
    """A table as Markdown, for docs/architecture.md."""
    lines = ["| From | Event | To | Who | Why |", "| --- | --- | --- | --- | --- |"]
    for (status, event), found in table.items():
        who = "; ".join(names[actor] for actor in Actor if actor in found.by)
        lines.append(f"| {status} | {event} | {found.to} | {who} | {found.why} |")
    return "\n".join(lines) + "\n"


# The rules, once.


def reconcile_after() -> timedelta:
    """How long after a charge call begins an attempt may still be in flight."""
    return timedelta(seconds=settings.PAYMENT_RECONCILE_AFTER_S)


def attempts_left(txn: Transaction) -> bool:
    return txn.attempts < settings.PAYMENT_MAX_ATTEMPTS


def attempts_left_q() -> Q:
    return Q(attempts__lt=settings.PAYMENT_MAX_ATTEMPTS)


def abandoned(txn: Transaction, *, now: datetime) -> bool:
    """Pending, its claim older than the reconcile window: its process died during the provider
    call. This host's guess, for what a page shows; a claim decides by abandoned_q()."""
    claimed_at = txn.claimed_at if isinstance(txn.claimed_at, datetime) else txn.updated_at
    return txn.status == Status.PENDING and claimed_at < now - reconcile_after()


def window_start() -> Any:
    """The database's clock minus the reconcile window: a claim taken, or a charge call begun,
    before it can no longer be in flight (never a host's clock; see core.db.DatabaseNow)."""
    return ExpressionWrapper(DatabaseNow() - reconcile_after(), output_field=DateTimeField())


def abandoned_q() -> Q:
    """abandoned(), in SQL, by the database's clock."""
    return Q(status=Status.PENDING, claimed_at__lt=window_start())


def window_passed_q() -> Q:
    """The latest charge call began before the window, by the database's clock."""
    return Q(charge_started_at__lt=window_start()) | Q(charge_started_at__isnull=True)


def lookup_due_q() -> Q:
    """An unknown row to look up before the window passes, on a schedule that backs off: first once
    the latest charge call's slowest possible attempt is over, then each time as long after the
    last claim (a lookup's) as that claim was after the call began: about d, 2d, 4d … after it.
    A charge found then settles at once; "no such charge" still proves nothing until the window.
    Needs the `since_claim` and `claim_after_start` aliases of `lookup_schedule()`."""
    slowest_ms = (
        settings.PAYMENT_DEADLINE_MS + settings.PAYMENT_CONNECT_TIMEOUT_MS + settings.PAYMENT_TIMEOUT_MS
    )
    slowest = ExpressionWrapper(
        DatabaseNow() - timedelta(milliseconds=slowest_ms), output_field=DateTimeField()
    )
    backed_off = Q(claimed_at__isnull=True) | Q(since_claim__gte=F("claim_after_start"))
    return Q(status=Status.UNKNOWN, charge_started_at__lt=slowest) & backed_off


def lookup_schedule() -> dict[str, Any]:
    """The aliases lookup_due_q() compares, by the database's clock."""
    return {
        "since_claim": ExpressionWrapper(DatabaseNow() - F("claimed_at"), output_field=DurationField()),
        "claim_after_start": ExpressionWrapper(
            F("claimed_at") - F("charge_started_at"), output_field=DurationField()
        ),
    }


def in_flight_until(txn: Transaction) -> datetime:
    """Until when an attempt of the latest charge call may still be in flight."""
    return (txn.charge_started_at or txn.created_at) + reconcile_after()


def retryable_q() -> Q:
    """What a Retry may send now, due or not: failed with tries left."""
    return Q(status=Status.FAILED) & attempts_left_q()


def reconcilable_q() -> Q:
    """What a Reconcile may look up: an unknown outcome, or a row abandoned mid-call."""
    return Q(status=Status.UNKNOWN) | abandoned_q()


def due_q(*, now: datetime) -> Q:
    """Failed, its retry due, tries left, and nobody asked to decide."""
    return Q(status=Status.FAILED, next_retry_at__lte=now, review_reason="") & attempts_left_q()


def retry_refusal() -> str:
    return f"only a failed payment with fewer than {settings.PAYMENT_MAX_ATTEMPTS} tries can be retried"


def cancel_refusal(txn: Transaction) -> str:
    """Why this transaction may not be canceled, or "" when it may."""
    if txn.status == Status.UNKNOWN:
        # Canceling would hide a charge the provider may have made.
        return "the provider may have charged it; reconcile it first"
    if txn.status == Status.PENDING:
        return "it is being sent to the provider right now; try again in a moment"
    if (txn.status, Event.CANCEL) not in TABLE:
        return f"it is already {txn.status}"
    return ""


NEXT_ACTIONS = {
    "none": "Final: nothing more will happen.",
    "wait": "A request is working on it right now; ask again in a moment.",
    "retry": "Not charged; the service sends it again at `at` unless it is canceled first.",
    "verify": "The provider may have charged it; reconcile_payments asks the provider after `at`.",
    "review": "Not charged and never sent again automatically; support decides.",
}


def next_step(txn: Transaction) -> dict[str, Any]:
    """What the service will do next with this payment, on its own."""
    if txn.status == Status.PENDING:
        return {"action": "wait", "at": None}
    if txn.status == Status.UNKNOWN:
        return {
            "action": "verify",
            "at": in_flight_until(txn) if (txn.charge_started_at or txn.created_at) else None,
        }
    if txn.status == Status.FAILED:
        if txn.needs_review or txn.next_retry_at is None or not attempts_left(txn):
            return {"action": "review", "at": None}
        return {"action": "retry", "at": txn.next_retry_at}
    return {"action": "none", "at": None}


def answer_name(txn: Transaction) -> str:
    """The row of payments.outcomes that the API answers with for this transaction as it stands
    (what payments.services.charge.raise_for_status raises; a test keeps the two equal)."""
    Status = Transaction.Status
    if txn.status == Status.DECLINED:
        return "rejected" if txn.error_type == Transaction.ErrorType.PROVIDER_REJECTED else "declined"
    if txn.status == Status.FAILED:
        exhausted = txn.next_retry_at is None or not attempts_left(txn)
        return "needs_review" if exhausted else "retry_scheduled"
    return {
        Status.SUCCEEDED: "succeeded",
        Status.UNKNOWN: "outcome_unknown",
        Status.CANCELED: "canceled",
        Status.PENDING: "in_progress",
    }[txn.status]
