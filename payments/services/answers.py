"""What a provider's answer makes of a charge: its event in the transition table, and the
fields it sets on the row. No database here: settle applies it to the row it read under the
lock, or to the row as the charge path inserted it (payments.services.settlement)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from payments import selectors, transitions
from payments.models import Transaction
from payments.provider import Outcome, ProviderResult
from payments.transitions import Actor, Event

Status = Transaction.Status

RETRY_BASE_DELAY_S = 60

RETRY_MAX_DELAY_S = 3600


def next_retry_at(txn: Transaction) -> datetime | None:
    if not transitions.attempts_left(txn):
        return None
    delay_s = min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * 2 ** max(0, txn.attempts - 1))
    return timezone.now() + timedelta(seconds=delay_s)


def answer_event(txn: Transaction, result: ProviderResult, *, kind: str) -> Event | None:
    """The event a provider's answer is in the transition table; None: it changes nothing."""
    if result.mismatch and result.outcome in FINAL_ERROR_TYPES:
        return Event.MISMATCH  # an answer for another charge says nothing about ours
    if result.outcome == Outcome.SUCCEEDED:
        return Event.SUCCEEDED
    if result.outcome in (Outcome.DECLINED, Outcome.REJECTED):
        return Event.DECLINED
    if kind != "charge":
        return None
    if result.outcome == Outcome.UNKNOWN or txn.error_type == Transaction.ErrorType.OUTCOME_UNKNOWN:
        return Event.OUTCOME_UNKNOWN  # this call, or an earlier one, may have charged: unknown is sticky
    return Event.SEND_FAILED


def apply_answer(
    txn: Transaction,
    claimed: Transaction,
    result: ProviderResult,
    *,
    event: Event | None,
    by: Actor,
    kind: str,
) -> None:
    """Set on `txn` (the row as it is) what the answer `event` makes of it, for the claim `claimed`."""
    before = (txn.status, txn.error_code)
    # This claim's try counts while no other claim took the row, also when a provider event
    # settled it during the call (the token is still this claim's).
    if (
        kind == "charge"
        and result.attempts
        and claimed.claim_token
        and txn.claim_token == claimed.claim_token
    ):
        txn.attempts += 1
    target = transitions.move(txn.status, event, by=by) if event else None
    if target in (Status.SUCCEEDED, Status.DECLINED):
        txn.status, txn.error_type = target, FINAL_ERROR_TYPES[result.outcome]
        txn.provider_charge_id = result.charge_id
        txn.error_code = "" if target == Status.SUCCEEDED else result.code
        txn.error_message = "" if target == Status.SUCCEEDED else result.message
        txn.source = ""
        txn.next_retry_at = None
        txn.review_reason = late_success_reason(*before) if target == Status.SUCCEEDED else ""
    elif event == Event.MISMATCH and target == Status.UNKNOWN:
        txn.status = Status.UNKNOWN
        txn.error_type = Transaction.ErrorType.OUTCOME_UNKNOWN
        txn.error_code, txn.error_message = "answer_mismatch", result.mismatch[:500]
        txn.next_retry_at = None
        txn.review_reason = f"the provider's answer does not match the request: {result.mismatch}"[:200]
    elif target == Status.UNKNOWN:
        if txn.error_type != Transaction.ErrorType.OUTCOME_UNKNOWN:
            txn.error_code, txn.error_message = result.code, result.message
        txn.status = Status.UNKNOWN
        txn.error_type = Transaction.ErrorType.OUTCOME_UNKNOWN
        txn.next_retry_at = None
    elif target == Status.FAILED:
        txn.status = Status.FAILED
        txn.error_type = Transaction.ErrorType.PROVIDER_ERROR
        txn.error_code, txn.error_message = result.code, result.message
        txn.next_retry_at = next_retry_at(txn)
        if txn.next_retry_at is None:
            txn.review_reason = f"not charged after {txn.attempts} tries"


def late_success_reason(status: str, error_code: str) -> str:
    """Why a success needs a person: the service had told someone it would not be charged."""
    if status == Status.CANCELED:
        return "charged after cancel"
    if status == Status.FAILED and error_code == selectors.NOT_CHARGED_CODE:
        return "charged after a lookup found no charge"
    return ""


FINAL_ERROR_TYPES = {
    Outcome.SUCCEEDED: "",
    Outcome.DECLINED: Transaction.ErrorType.CARD_ERROR,
    Outcome.REJECTED: Transaction.ErrorType.PROVIDER_REJECTED,
}
