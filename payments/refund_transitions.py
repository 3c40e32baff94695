"""The state machine of a refund, and the rules about it, each written once.

`REFUND_TABLE` is to refunds what payments.transitions.TABLE is to charges, in the same
terms (events, actors, moves), and `transitions.move(..., table=REFUND_TABLE)` asks it.
`manage.py transition_table --refunds` renders it into docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from payments.models import Refund, Transaction
from payments.transitions import BEFORE_CLAIM, Actor, Event, Move, reconcile_after, render_table, window_start

Status = Transaction.Status
RefundStatus = Refund.Status

REFUND_ACTOR_NAMES = {
    Actor.CLIENT: "API client",
    Actor.SUPPORT: "admin Refund…",
    Actor.RECONCILE: "reconcile_refunds",
    Actor.PROVIDER: "provider event",
}

# A refund's moves. Who sends it: the API client (POST …/refunds, again with its
# Idempotency-Key) and support (the transaction page's Refund…); reconcile_refunds looks up.
REFUND_SENDERS = frozenset({Actor.CLIENT, Actor.SUPPORT})
REFUND_ANSWERED = frozenset({Actor.CLIENT, Actor.SUPPORT, Actor.RECONCILE})
# Who may report a provider's fact about a refund: also the provider's own event.
REFUND_REPORTED = REFUND_ANSWERED | {Actor.PROVIDER}


def _refund_answers(why: str) -> dict[Event, Move]:
    return {
        Event.SUCCEEDED: Move(RefundStatus.SUCCEEDED, REFUND_REPORTED, why),
        Event.DECLINED: Move(RefundStatus.FAILED, REFUND_REPORTED, f"{why}: the provider refused it, final"),
    }


REFUND_TABLE: dict[tuple[str, Event], Move] = {
    **{(RefundStatus.PENDING, e): m for e, m in _refund_answers("the answer to this claim's call").items()},
    (RefundStatus.PENDING, Event.PROVIDER_PENDING): Move(
        RefundStatus.PENDING, REFUND_ANSWERED, "the provider holds it: reconcile_refunds looks it up"
    ),
    (RefundStatus.PENDING, Event.OUTCOME_UNKNOWN): Move(
        RefundStatus.UNKNOWN, REFUND_SENDERS, "no definitive answer: it may have been refunded (sticky)"
    ),
    (RefundStatus.PENDING, Event.SEND_FAILED): Move(
        RefundStatus.FAILED, REFUND_SENDERS, "nothing was refunded; the same request may be sent again"
    ),
    (RefundStatus.PENDING, Event.MISMATCH): Move(
        RefundStatus.UNKNOWN,
        REFUND_ANSWERED,
        "the answer is not for this refund: unknown, flagged for review",
    ),
    (RefundStatus.PENDING, Event.NOT_FOUND): Move(
        RefundStatus.FAILED,
        frozenset({Actor.RECONCILE}),
        "the provider has no such refund and no attempt can be in flight",
    ),
    (RefundStatus.PENDING, Event.PUT_BACK): Move(
        BEFORE_CLAIM, REFUND_ANSWERED, "nothing was sent (breaker, credentials), or a lookup told nothing"
    ),
    (RefundStatus.PENDING, Event.CLAIM): Move(
        RefundStatus.PENDING,
        frozenset({Actor.RECONCILE}),
        "held by the provider, or abandoned mid-call (its process died): looked up",
    ),
    (RefundStatus.FAILED, Event.CLAIM): Move(
        RefundStatus.PENDING, REFUND_SENDERS, "not refunded: sent again with the same provider key"
    ),
    **{(RefundStatus.FAILED, e): m for e, m in _refund_answers("a late answer").items()},
    (RefundStatus.FAILED, Event.CANCEL): Move(
        RefundStatus.CANCELED, frozenset({Actor.SUPPORT}), "known not refunded: given up on"
    ),
    (RefundStatus.UNKNOWN, Event.CLAIM): Move(
        RefundStatus.PENDING,
        frozenset({Actor.CLIENT, Actor.SUPPORT, Actor.RECONCILE}),
        "sent again with the same key (client, support), or looked up (reconcile)",
    ),
    **{(RefundStatus.UNKNOWN, e): m for e, m in _refund_answers("a late answer").items()},
    (RefundStatus.CANCELED, Event.SUCCEEDED): Move(
        RefundStatus.SUCCEEDED, REFUND_REPORTED, "refunded after all: flagged for review"
    ),
}


def render_refund_table() -> str:
    return render_table(REFUND_TABLE, REFUND_ACTOR_NAMES)


# The rules about a refund, once.


def refund_refusal(charge: Transaction) -> str:
    """Why this charge may not be refunded now, or "" when it may."""
    if charge.status == Status.SUCCEEDED:
        return ""
    if charge.status in (Status.UNKNOWN, Status.PENDING):
        return "the charge's outcome is not known yet; it can be refunded once it is known to have succeeded"
    return f"the charge is {charge.status}: nothing was charged, so nothing can be refunded"


def refund_abandoned_q() -> Q:
    """Pending under a claim older than the reconcile window, by the database's clock."""
    return Q(status=RefundStatus.PENDING, claimed_at__lt=window_start()) & ~Q(claim_token="")


def refund_held_q() -> Q:
    """Pending with no claim: the provider answered "pending" and settles it later."""
    return Q(status=RefundStatus.PENDING, claim_token="")


def refund_reconcilable_q() -> Q:
    return Q(status=RefundStatus.UNKNOWN) | refund_held_q() | refund_abandoned_q()


def refund_window_passed_q() -> Q:
    """The latest refund call began before the window, by the database's clock."""
    return Q(refund_started_at__lt=window_start()) | Q(refund_started_at__isnull=True)


def refund_resendable(refund: Refund) -> bool:
    """Failed without the provider refusing it: the same request may be sent again."""
    return refund.status == RefundStatus.FAILED and refund.error_type == Refund.ErrorType.PROVIDER_ERROR


def refund_next_step(refund: Refund) -> dict[str, Any]:
    """What the service will do next with this refund, on its own (NEXT_ACTIONS' words)."""
    if refund.status == RefundStatus.PENDING and not refund.held_by_provider:
        return {"action": "wait", "at": None}
    if refund.status in (RefundStatus.PENDING, RefundStatus.UNKNOWN):
        started = refund.refund_started_at or refund.created_at
        return {"action": "verify", "at": started + reconcile_after() if started else None}
    if refund_resendable(refund):
        return {"action": "review", "at": None}
    return {"action": "none", "at": None}


def refund_answer_name(refund: Refund) -> str:
    """The row of payments.outcomes that the API answers with for this refund as it stands."""
    if refund.status == RefundStatus.PENDING:
        return "refund_pending" if refund.held_by_provider else "refund_in_progress"
    if refund.status == RefundStatus.FAILED:
        return "refund_not_sent" if refund_resendable(refund) else "refund_failed"
    return {
        RefundStatus.SUCCEEDED: "refund_succeeded",
        RefundStatus.UNKNOWN: "refund_outcome_unknown",
        RefundStatus.CANCELED: "refund_canceled",
    }[refund.status]
