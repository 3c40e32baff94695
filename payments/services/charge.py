"""The charge path: the API's one write.

The rule that shapes this module: no database transaction, and no pooled connection, is held
while the provider is called. A charge is "short write, release the connection, call the
provider, short write".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from core.db import release_db_connection
from core.events import log_event
from core.logs.request_id import current_request_id
from payments import failpoints, provider, selectors, transitions
from payments.errors import (
    IdempotencyConflict,
    OutcomeUnknown,
    ProviderUnavailable,
    RequestInProgress,
    error_for,
)
from payments.models import Transaction, mask_source
from payments.provider import Outcome, ProviderResult
from payments.services.claims import claim_fields, put_back
from payments.services.settlement import (
    NOTHING_SENT,
    Fenced,
    alarm_misconfigured,
    assign,
    count_charge,
    interrupted_fields,
    provider_call_slot,
    send_charge,
    settle_with_retry,
)
from payments.transitions import Actor, Event

logger = logging.getLogger("payments.services")  # one logger name for all the services, as before the split

Status = Transaction.Status
CLIENT = Actor.CLIENT


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


class _KeyUsed(Exception):
    """The idempotency key is already a payment's: it is resumed, needing no provider slot."""

    def __init__(self, row: Transaction) -> None:
        super().__init__(f"the key is payment {row.pk}'s")
        self.row = row


def charge_create(
    *, client: AbstractBaseUser, request: ChargeRequest, idempotency_key: str | None
) -> Charged:
    """Charge once. Returns the succeeded transaction or raises a PaymentError.

    With an idempotency key, a completed charge is replayed, a failed or unknown one is sent
    again with the same provider key (the provider charges a key at most once), and one in
    flight is a conflict. The row is inserted first: the key's unique constraint finds a key
    already used, which is looked up only then, or when the provider cannot take a call now
    (a replay waits for no provider slot and is answered while the breaker is open).
    """
    fingerprint = request.fingerprint()
    try:
        return _charge_new(
            client=client, request=request, idempotency_key=idempotency_key, fingerprint=fingerprint
        )
    except _KeyUsed as used:
        return _resume(used.row, fingerprint)


def _charge_new(
    *, client: AbstractBaseUser, request: ChargeRequest, idempotency_key: str | None, fingerprint: str
) -> Charged:
    def raise_if_used() -> None:
        if idempotency_key is not None:
            existing = selectors.transaction_for_key(client=client, idempotency_key=idempotency_key)
            if existing is not None:
                raise _KeyUsed(existing)

    txn = None
    try:
        with provider_call_slot(before_waiting=raise_if_used):
            failpoints.hit("charge.before_insert")
            txn = _insert_pending(
                client=client, request=request, idempotency_key=idempotency_key, fingerprint=fingerprint
            )
            if txn is not None:
                return _call_provider_and_settle(txn, previous=None)
    except ProviderUnavailable:
        if txn is None:  # the slot refused before anything was written
            raise_if_used()
        raise
    raise_if_used()  # Another request with the same key inserted first.
    raise RequestInProgress()


def _insert_pending(
    *, client: AbstractBaseUser, request: ChargeRequest, idempotency_key: str | None, fingerprint: str
) -> Transaction | None:
    """The pending row, committed before the provider is called; None if the key is taken.

    One INSERT in autocommit: the database commits it, with no transaction block around it
    (which would add two SET autocommit and a COMMIT)."""
    try:
        return Transaction.objects.create(
            client=client,
            amount=request.amount,
            currency=request.currency,
            source=request.source,
            source_masked=mask_source(request.source),
            description=request.description,
            metadata=request.metadata,
            idempotency_key=idempotency_key,
            request_fingerprint=fingerprint,
            status=Status.PENDING,
            claim_token=uuid.uuid4().hex,
            last_request_id=current_request_id() or "",
        )  # charge_started_at and claimed_at: the database's clock (db_default)
    except IntegrityError:
        if idempotency_key is None:
            raise
        return None


def _resume(txn: Transaction, fingerprint: str) -> Charged:
    if txn.request_fingerprint != fingerprint:
        # Not the first request's payment: this request was not sent and nothing of it was kept
        # (the answers table's status "-"); its transaction would read as this one's outcome.
        raise IdempotencyConflict()
    sendable = txn.status in (Status.FAILED, Status.UNKNOWN) and transitions.attempts_left(txn)
    if not (sendable or transitions.abandoned(txn, now=timezone.now())):
        return raise_for_status(txn, replayed=True)
    with provider_call_slot():
        # Sending again with the same provider key is safe: the provider charges it at most once.
        previous = _claim_for_charge(txn)
        if previous is None:
            raise RequestInProgress(transaction=selectors.transaction_get(transaction_id=txn.pk))
        return _call_provider_and_settle(previous, previous=previous)


def _claim_for_charge(txn: Transaction) -> Transaction | None:
    """Move the row to pending with a conditional UPDATE, so only one caller sends it.

    Returns the row as it was before the claim (to put it back), or None if another got it.
    """
    if transitions.move(txn.status, Event.CLAIM, by=CLIENT) is None:
        return None
    if txn.status == Status.PENDING:
        candidates = Transaction.objects.filter(transitions.abandoned_q(), pk=txn.pk)
    else:
        candidates = Transaction.objects.filter(transitions.attempts_left_q(), pk=txn.pk, status=txn.status)
    changes = {**claim_fields(for_charge=True), "last_request_id": current_request_id() or ""}
    # Abandoned mid-call by a process that died: the provider may have charged it.
    interrupted = interrupted_fields(txn) if txn.status == Status.PENDING else {}
    changes.update({name: value for name, value in interrupted.items() if name != "status"})
    if candidates.update(**changes) != 1:
        return None
    assign(txn, interrupted)  # as it is to be put back
    txn.claim_token = changes["claim_token"]
    return txn


def _call_provider_and_settle(txn: Transaction, *, previous: Transaction | None) -> Charged:
    """Send the charge and record its outcome. `previous`: the row before it was claimed
    (None for a row this request just inserted)."""
    # The pending row is committed; give the connection back before the provider call,
    # which may take seconds (the incident's root cause).
    release_db_connection()
    failpoints.hit("charge.before_call")
    result = send_charge(txn, provider.get_client())
    failpoints.hit("charge.after_call")
    if result.outcome in NOTHING_SENT:
        _unsend(txn, previous=previous, result=result)
        if result.outcome == Outcome.MISCONFIGURED:
            alarm_misconfigured(result)
            raise ProviderUnavailable(code="provider_misconfigured", retry_after_s=60)
        raise ProviderUnavailable(code=result.code, retry_after_s=max(1, result.retry_after_s))
    try:
        settled = settle_with_retry(claimed=txn, result=result, by=CLIENT, inserted=previous is None)
    except Fenced as exc:
        # Another request took the row over after the window: its answer is the truth.
        return raise_for_status(exc.row)
    except DatabaseError as exc:
        # The provider was called but its answer could not be saved: whatever it said, the row
        # is still pending and reconcile_payments will settle it. Never "busy, not charged".
        log_event(
            logger,
            "payment.settle_failed",
            level=logging.ERROR,
            message=f"Could not record the provider's answer ({result.outcome}): {type(exc).__name__}",
            transaction_id=str(txn.pk),
            outcome=result.outcome.value,
            provider_charge_id=result.charge_id,
        )
        txn.status, txn.error_type, txn.error_code = Status.UNKNOWN, "outcome_unknown", "settle_failed"
        count_charge("outcome_unknown")  # what the caller is told, though nothing could be saved
        raise OutcomeUnknown(code="settle_failed", transaction=txn) from exc
    return raise_for_status(settled)


def _unsend(txn: Transaction, *, previous: Transaction | None, result: ProviderResult) -> None:
    """Nothing was charged: forget a row this request inserted, or put a claimed one back.

    A breaker refusal or a provider that refuses our credentials must leave nothing that a
    command would charge later, while the caller is told "not charged".
    """
    with transaction.atomic():
        if previous is None:
            Transaction.objects.filter(pk=txn.pk, status=Status.PENDING, claim_token=txn.claim_token).delete()
        else:
            with contextlib.suppress(Fenced):  # another request took it over: it is that one's
                put_back(previous, by=CLIENT, attempts=result.attempts, kind="charge")


def raise_for_status(txn: Transaction, *, replayed: bool = False) -> Charged:
    """Turn a transaction into the API's answer: itself, or the typed error of its row in
    payments.outcomes (payments.errors.error_for)."""
    error = error_for(txn, replayed=replayed)
    if error is not None:
        raise error
    return Charged(transaction=txn, replayed=replayed)
