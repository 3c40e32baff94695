"""Refunds: money given back for a succeeded charge, exactly once, never more than was charged.

The charge path's shape (payments.services.charge): a short write under the charge's row lock,
where what is left to refund is checked and the refund inserted (or claimed to be sent again);
the connection released; the provider called with the refund's own provider key, the same on
every send; a short write under the refund's row lock, through payments.refund_transitions.
Succeeded, pending and unknown refunds count against what is left, so a refund in flight holds
its amount until the provider's answer or a lookup frees it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import prefetch_related_objects
from django.utils import timezone

from core.db import DatabaseNow, release_db_connection
from core.events import log_event
from core.logs.request_id import current_request_id
from payments import failpoints, provider, refund_transitions, transitions
from payments.currencies import format_minor_units
from payments.errors import (
    IdempotencyConflict,
    NotRefundable,
    RefundError,
    RefundTooLarge,
    RefundUnavailable,
    refund_error_for,
)
from payments.models import Refund, Transaction
from payments.provider import Outcome, ProviderResult
from payments.refund_transitions import REFUND_TABLE
from payments.services.refund_settlement import RefundFenced, put_back, settle_refund
from payments.services.settlement import (
    NOTHING_SENT,
    alarm_misconfigured,
    provider_call_slot,
    retried_on_database_error,
)
from payments.transitions import Actor, Event

logger = logging.getLogger("payments.services")  # one logger name for all the services

Status = Refund.Status
RECONCILE = Actor.RECONCILE


@dataclass(frozen=True)
class RefundRequest:
    reason: str
    amount: int | None = None  # None: all that is left
    note: str = ""

    def fingerprint(self, charge_id: uuid.UUID) -> str:
        canonical = json.dumps([str(charge_id), self.amount, self.reason, self.note], separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Refunded:
    refund: Refund
    charge: Transaction
    replayed: bool = False


def refundable(charge: Transaction) -> int:
    """What is left to refund: the charge less its succeeded, pending and unknown refunds."""
    return charge.amount - sum(r.amount for r in charge.refunds.all() if r.status in Refund.COUNTED_STATUSES)


def refunded(charge: Transaction) -> int:
    """What the provider has refunded, as far as the service knows."""
    return sum(r.amount for r in charge.refunds.all() if r.status == Status.SUCCEEDED)


def refund_create(
    *,
    charge_id: uuid.UUID,
    client: AbstractBaseUser,
    request: RefundRequest,
    idempotency_key: str | None,
    by: Actor,
    requested_by: str,
) -> Refunded:
    """Refund once. Returns the refund (succeeded, or pending with the provider) or raises a
    PaymentError. With an idempotency key (the client's keys for refunds), a settled refund is
    replayed, an unknown one or one not sent is sent again with the same provider key, and one
    in flight is a conflict."""
    fingerprint = request.fingerprint(charge_id)
    if idempotency_key is not None:
        existing = Refund.objects.filter(client=client, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _resume(existing, fingerprint, by=by)
    with provider_call_slot(RefundUnavailable):
        failpoints.hit("refund.before_insert")
        refund = _insert_pending(
            charge_id=charge_id,
            client=client,
            request=request,
            fingerprint=fingerprint,
            idempotency_key=idempotency_key,
            requested_by=requested_by,
        )
        if refund is not None:
            return _send(refund, previous=None, by=by)
    existing = Refund.objects.filter(client=client, idempotency_key=idempotency_key or "").first()
    if existing is None:
        raise RefundError("refund_in_progress")
    return _resume(existing, fingerprint, by=by)


def _locked_charge(charge_id: uuid.UUID) -> Transaction:
    """The charge under its row lock, with its refunds: what is left is read from them, and an
    answer shows the charge (its amount_refunded) without another query, also when the database
    fails after the provider call."""
    charge = Transaction.objects.select_for_update().get(pk=charge_id)
    prefetch_related_objects([charge], "refunds")
    return charge


def _room_for(charge: Transaction, amount: int | None) -> int:
    """The amount to refund (all that is left when None), under the charge's row lock; raises
    NotRefundable or RefundTooLarge, writing nothing."""
    refusal = refund_transitions.refund_refusal(charge)
    if refusal:
        raise NotRefundable(f"This charge cannot be refunded: {refusal}.", transaction=charge)
    left = refundable(charge)
    wanted = left if amount is None else amount
    if wanted < 1 or wanted > left:
        what = (
            "Nothing is left to refund"
            if left == 0
            else f"At most {format_minor_units(left, charge.currency)}"
        )
        raise RefundTooLarge(
            f"{what}: the charge less its succeeded, pending and unknown refunds.",
            transaction=charge,
            extra={"refundable": left},
        )
    return wanted


def _insert_pending(
    *,
    charge_id: uuid.UUID,
    client: AbstractBaseUser,
    request: RefundRequest,
    fingerprint: str,
    idempotency_key: str | None,
    requested_by: str,
) -> Refund | None:
    """The pending refund, committed before the provider is called; None if the key is taken."""
    with transaction.atomic():
        charge = _locked_charge(charge_id)
        amount = _room_for(charge, request.amount)
        try:
            with transaction.atomic():
                refund = Refund.objects.create(
                    transaction=charge,
                    client=client,
                    amount=amount,
                    currency=charge.currency,
                    reason=request.reason,
                    note=request.note,
                    requested_by=requested_by,
                    idempotency_key=idempotency_key,
                    request_fingerprint=fingerprint,
                    status=Status.PENDING,
                    claim_token=uuid.uuid4().hex,
                    last_request_id=current_request_id() or "",
                )  # refund_started_at and claimed_at: the database's clock (db_default)
        except IntegrityError:
            if idempotency_key is None:
                raise
            return None
    refund.transaction = charge
    return refund


def _resume(refund: Refund, fingerprint: str, *, by: Actor) -> Refunded:
    if refund.request_fingerprint != fingerprint:
        raise IdempotencyConflict()
    charge = refund.transaction
    if not (refund.status == Status.UNKNOWN or refund_transitions.refund_resendable(refund)):
        return _answer(refund, charge, replayed=True)
    with provider_call_slot(RefundUnavailable):
        previous = _claim_to_send(refund, by=by)
        if previous is None:
            current = Refund.objects.select_related("transaction").get(pk=refund.pk)
            raise RefundError("refund_in_progress", transaction=current.transaction, refund=current)
        return _send(previous, previous=previous, by=by)


def _claim_to_send(refund: Refund, *, by: Actor) -> Refund | None:
    """Move the refund to pending with a conditional UPDATE, so only one caller sends it; a
    refund that was not counted (failed) must fit in what is left again."""
    if transitions.move(refund.status, Event.CLAIM, by=by, table=REFUND_TABLE) is None:
        return None
    with transaction.atomic():
        charge = _locked_charge(refund.transaction_id)
        if refund.status not in Refund.COUNTED_STATUSES:
            _room_for(charge, refund.amount)
        changes = {
            "status": Status.PENDING,
            "claim_token": uuid.uuid4().hex,
            "claimed_at": DatabaseNow(),
            "refund_started_at": DatabaseNow(),
            "updated_at": timezone.now(),
            "last_request_id": current_request_id() or "",
        }
        if Refund.objects.filter(pk=refund.pk, status=refund.status).update(**changes) != 1:
            return None
    refund.claim_token = changes["claim_token"]
    refund.transaction = charge
    return refund


def _send(refund: Refund, *, previous: Refund | None, by: Actor) -> Refunded:
    charge = refund.transaction
    release_db_connection()  # no connection is held while the provider is called
    failpoints.hit("refund.before_call")
    result = provider.get_client().refund(
        charge_key=charge.provider_idempotency_key,
        refund_key=refund.provider_idempotency_key,
        amount=refund.amount,
        charge_id=charge.provider_charge_id,
    )
    failpoints.hit("refund.after_call")
    if result.outcome in NOTHING_SENT:
        _unsend(refund, previous=previous, result=result)
        if result.outcome == Outcome.MISCONFIGURED:
            alarm_misconfigured(result)
            raise RefundUnavailable(code="provider_misconfigured", retry_after_s=60)
        raise RefundUnavailable(code=result.code, retry_after_s=max(1, result.retry_after_s))
    try:
        settled = retried_on_database_error(lambda: settle_refund(claimed=refund, result=result, by=by))
    except RefundFenced as exc:
        return _answer(exc.row, charge)
    except DatabaseError as exc:
        log_event(
            logger,
            "refund.settle_failed",
            level=logging.ERROR,
            message=f"Could not record the answer to a refund ({result.outcome}): {type(exc).__name__}",
            refund_id=str(refund.pk),
            transaction_id=str(charge.pk),
            outcome=result.outcome.value,
        )
        refund.status, refund.error_type, refund.error_code = (
            Status.UNKNOWN,
            "outcome_unknown",
            "settle_failed",
        )
        raise RefundError(
            "refund_outcome_unknown", code="settle_failed", transaction=charge, refund=refund
        ) from exc
    return _answer(settled, charge)


def _unsend(refund: Refund, *, previous: Refund | None, result: ProviderResult) -> None:
    """Nothing was sent: forget a refund this request inserted, or put a claimed one back."""
    with transaction.atomic():
        if previous is None:
            Refund.objects.filter(
                pk=refund.pk, status=Status.PENDING, claim_token=refund.claim_token
            ).delete()
        else:
            put_back(previous, status=previous.status, attempts=result.attempts, kind="refund")


def _answer(refund: Refund, charge: Transaction, *, replayed: bool = False) -> Refunded:
    charge = Transaction.objects.get(pk=charge.pk)  # as it stands, for the answer's `transaction`
    error = refund_error_for(refund, charge=charge, replayed=replayed)
    if error is not None:
        raise error
    return Refunded(refund=refund, charge=charge, replayed=replayed)
