"""What a payment's page says first: its state in words, and the actions that fit it.

Every sentence comes from payments.outcomes or a fixed text here; no raw exception text
from older rows reaches the page (`fixed_message`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.utils.timezone import localtime

from payments import provider, selectors, transitions
from payments.models import PaymentAttempt, Transaction
from payments.outcomes import answer
from payments.services import refunded
from payments.transitions import next_step

NO_WRAP = '<span style="white-space: nowrap">{}</span>'
# An automatic retry this late means retry_failed_payments is probably not running.
RETRY_GRACE = timedelta(minutes=10)
# The one date format of the admin: in settings.TIME_ZONE, the zone named.
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
Status = Transaction.Status


def when(value: datetime | None) -> str:
    return localtime(value).strftime(DATE_FORMAT) if value else "—"


# Exception text that rows stored before messages were fixed may hold (host names, ports, URLs).
RAW_ERROR = re.compile(r"ConnectionPool\(|Max retries|Traceback|Error\(|://|\bhost=|\bport=")
# Codes of those older rows, by the cause they stand for today.
LEGACY_CODES = {"provider_connection_error": provider.Cause.CONNECTION_ERROR}


def fixed_message(message: str, code: str, http_status: int | None = None) -> str:
    """The stored message, or the code's fixed description when it holds raw exception text:
    the admin never shows host names, ports, URLs or exception reprs (the logs have them)."""
    if not RAW_ERROR.search(message):
        return message
    try:
        cause = provider.Cause(LEGACY_CODES.get(code, code))
    except ValueError:
        return "Details are in the logs under this transaction's id."
    return provider.describe(cause, http_status)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def attempt_summary(attempts: Iterable[PaymentAttempt]) -> str:
    """What the HTTP attempts did: only those that reached the provider are said to have.
    A refund's attempts (kind refund or refund_lookup) are counted apart from the charge's."""
    attempts = list(attempts)
    charges = [a for a in attempts if a.kind == "charge"]
    reached = sum(a.reached_provider for a in charges)
    parts = [f"{plural(reached, 'charge attempt')} reached the provider"]
    if refused := len(charges) - reached:
        parts.append(f"{plural(refused, 'refused connection')}, nothing sent")
    for kind, word in (
        ("lookup", "lookup"),
        ("refund", "refund attempt"),
        ("refund_lookup", "refund lookup"),
    ):
        if count := sum(a.kind == kind for a in attempts):
            parts.append(plural(count, word))
    return "; ".join(parts)


@dataclass(frozen=True)
class Banner:
    """The change page's answer to "what happened, what now"."""

    level: str  # success, info, warning or error (the admin's message colours)
    title: str
    lines: tuple[str, ...] = ()


def _tail(sentence: str) -> str:
    """An outcome table sentence after a colon."""
    return sentence[:1].lower() + sentence[1:]


def minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def state_banner(txn: Transaction, *, now: datetime) -> Banner:
    """A plain-language summary by state, in the words of payments.outcomes where they fit."""
    review = (f"Needs review: {txn.review_reason}.",) if txn.needs_review else ()
    if txn.status == Status.SUCCEEDED:
        charge_id = (f"Provider charge id: {txn.provider_charge_id}.",) if txn.provider_charge_id else ()
        if txn.review_reason and refunded(txn) >= txn.amount:
            return Banner(
                "info",
                f"Charged after all ({txn.review_reason}), and refunded in full.",
                ("The customer has the money back: nothing more to do.", *charge_id),
            )
        if txn.review_reason:  # charged after the service had given up on it
            return Banner(
                "error",
                f"Charged after all: {txn.review_reason}.",
                (
                    "The provider charged this payment after it was canceled or found not charged "
                    "(an attempt outlived the window). The customer may have paid twice: refund or keep it.",
                    *charge_id,
                ),
            )
        return Banner("success", f"Succeeded: {_tail(answer('succeeded').happened)}", charge_id)
    if txn.status == Status.DECLINED:
        if txn.error_type == Transaction.ErrorType.CARD_ERROR:
            why = f"Decline code: {txn.error_code or 'none given'}."
            return Banner("info", f"Declined: {_tail(answer('declined').message)}", (why, "Final."))
        why = f"Provider code: {txn.error_code or 'none given'}."
        return Banner("info", f"Declined: {_tail(answer('rejected').message)}", (why, "Final."))
    if txn.status == Status.CANCELED:
        note = f"Reason: {txn.status_note}." if txn.status_note else "No reason was recorded."
        return Banner("info", f"Canceled: {_tail(answer('canceled').message)}", (note,))
    if txn.status == Status.UNKNOWN:
        return _unknown_banner(txn, now=now, extra=review)
    if txn.status == Status.PENDING:
        since = txn.updated_at
        if since and transitions.abandoned(txn, now=now):
            return Banner(
                "warning",
                "Abandoned: the provider may have charged; Reconcile asks it.",
                (
                    f"Pending since {when(since)}, longer than the reconcile window "
                    f"({settings.PAYMENT_RECONCILE_AFTER_S} s): the process sending it stopped mid-call.",
                    *review,
                ),
            )
        return Banner(
            "info",
            "In flight: a request is sending it to the provider right now.",
            (answer("in_progress").next_step, "Reload in a moment.", *review),
        )
    return _failed_banner(txn, now=now)


def _unknown_banner(txn: Transaction, *, now: datetime, extra: tuple[str, ...]) -> Banner:
    at = next_step(txn)["at"]
    cause = fixed_message(txn.error_message, txn.error_code)
    lines = [f"What happened: {cause} ({txn.error_code})." if cause else f"Cause: {txn.error_code}."]
    if at and now < at:
        lines.append(
            f"An attempt may still be in flight until {when(at)}: a lookup before then proves nothing."
        )
    else:
        lines.append(
            f"No attempt can be in flight since {when(at)}: a lookup gives a definite answer "
            "(reconcile_payments also asks on its own)."
        )
    lines.append("Do not cancel it or ask the customer to pay again while the outcome is unknown.")
    return Banner(
        "warning", "Outcome unknown: the provider may have charged; Reconcile asks it.", (*lines, *extra)
    )


def _failed_banner(txn: Transaction, *, now: datetime) -> Banner:
    what = fixed_message(txn.error_message, txn.error_code)
    what_line = f"What happened: {what} ({txn.error_code})." if what else f"Cause: {txn.error_code}."
    if txn.error_code == selectors.NOT_CHARGED_CODE:
        what_line = "A lookup proved the provider made no charge."
    tries = f"Tries: {txn.attempts} of {settings.PAYMENT_MAX_ATTEMPTS}."
    step = next_step(txn)
    if step["action"] == "retry":
        late = now - step["at"]
        schedule = f"Automatic retry scheduled at {when(step['at'])}."
        level = "info"
        if minutes(late) >= 1:
            schedule += f" Overdue by {minutes(late)} min."
            if late > RETRY_GRACE:
                schedule += " Is retry_failed_payments running?"
                level = "warning"
        return Banner(level, "Not charged: retry is safe.", (what_line, schedule, tries))
    spent = not transitions.attempts_left(txn)
    reason = txn.review_reason or (
        "the attempt limit is spent" if spent else "no automatic retry is scheduled"
    )
    left = (
        "Retry now sends it once more; or cancel it and let the customer start a new payment."
        if not spent
        else "No tries left: cancel it, and the customer starts a new payment."
    )
    return Banner(
        "error",
        "Needs review: not charged, and never sent again automatically.",
        (f"Why: {reason}.", what_line, tries, left),
    )


def allowed_actions(txn: Transaction, *, user: AbstractBaseUser, now: datetime) -> list[str]:
    """The support actions this user may take on this payment in its state."""
    actions = []
    may_retry = user.has_perm("payments.retry_transaction")
    if may_retry and txn.status == Status.FAILED and transitions.attempts_left(txn):
        actions.append("retry")
    if may_retry and (txn.status == Status.UNKNOWN or transitions.abandoned(txn, now=now)):
        actions.append("reconcile")
    if user.has_perm("payments.cancel_transaction") and not transitions.cancel_refusal(txn):
        actions.append("cancel")
    return actions


# What a retry or reconcile on the change page did, in the support person's words.
