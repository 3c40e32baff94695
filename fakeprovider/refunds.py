"""The fake provider's refunds: what one refund request asks, the ledger's entries, and answers.

Standard library only; see the package's docstring. `FakeProvider` keeps one `_RefundState` per
refund idempotency key (each names the charge key it refunds) under its own lock.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

from fakeprovider.protocol import JsonObject, _error, _InvalidRequestError, _parse_json_object, _Response

REFUND_FIELDS = frozenset({"amount"})
# The statuses that count against what is left of a charge (a pending refund may still go out).
COUNTED_STATUSES = frozenset({"succeeded", "pending"})
# The failure reason a failed refund carries (a card closed since the charge, say).
FAILURE_REASON = "expired_or_canceled_card"


@dataclass(frozen=True)
class _RefundRequest:
    charge_key: str
    amount: int
    # The same refund key with another charge key or amount is another request.
    fingerprint: str


@dataclass(frozen=True)
class _RefundMode:
    """What a `refund_pending` or `refund_failed` fault makes of the next refund with its key."""

    status: str  # "pending" or "failed"
    ms: int = 0
    settles_to: str = "succeeded"


@dataclass
class _RefundState:
    request: _RefundRequest
    in_progress: bool = False
    # The refund made: {id, status, amount, charge, created} (and failure_reason when failed).
    refund: JsonObject | None = None
    # A delayed_commit fault: lookups do not see the refund before this (time.monotonic()).
    visible_at: float = 0.0
    # A pending refund settles as `settles_to` at this moment (time.monotonic()); None: never.
    settles_at: float | None = None
    settles_to: str = "succeeded"
    # Its event (succeeded or failed) has been queued: each refund is announced once.
    announced: bool = False

    def settle(self, now: float, status: str | None = None) -> bool:
        """Settle a pending refund whose time has come (or now, as `status`); whether it did."""
        refund = self.refund
        if refund is None or refund["status"] != "pending":
            return False
        if status is None and (self.settles_at is None or now < self.settles_at):
            return False
        _set_status(refund, status or self.settles_to)
        self.settles_at = None
        return True

    def counted(self) -> bool:
        """Whether this refund counts against what is left of its charge (one being made does)."""
        return self.in_progress or (self.refund is not None and self.refund["status"] in COUNTED_STATUSES)


def _set_status(refund: JsonObject, status: str) -> None:
    refund["status"] = status
    if status == "failed":
        refund["failure_reason"] = FAILURE_REASON


def parse_refund_request(charge_key: str, raw_body: bytes) -> _RefundRequest:
    body = _parse_json_object(raw_body)
    unknown = sorted(set(body) - REFUND_FIELDS)
    if unknown:
        raise _InvalidRequestError(f"Unknown parameter(s): {', '.join(unknown)}.")
    amount = body.get("amount")
    if type(amount) is not int or amount <= 0:
        raise _InvalidRequestError("amount must be a positive integer (minor units).")
    fingerprint = json.dumps({"charge": charge_key, "amount": amount}, sort_keys=True)
    return _RefundRequest(charge_key=charge_key, amount=amount, fingerprint=fingerprint)


def make_refund(state: _RefundState, charge: JsonObject, mode: _RefundMode | None, now: float) -> None:
    """Make the refund `state` asks for, of `charge`: succeeded, or as a fault's mode says."""
    refund: JsonObject = {
        "id": f"re_{secrets.token_hex(12)}",
        "status": "succeeded",
        "amount": state.request.amount,
        "charge": charge["id"],
        "created": int(time.time()),
    }
    state.refund = refund
    if mode is not None and mode.status == "failed":
        _set_status(refund, "failed")
    elif mode is not None:
        refund["status"] = "pending"
        state.settles_at, state.settles_to = now + mode.ms / 1000, mode.settles_to
        state.settle(now)  # ms 0: settled at once


def refusal(code: str, message: str) -> _Response:
    """A refund the provider will not make: nothing refunded, and nothing kept for the key."""
    return _error(400, "invalid_request_error", message, code=code)


def no_such_refund() -> _Response:
    return _error(
        404, "invalid_request_error", "No refund was made with this idempotency key.", code="resource_missing"
    )


def other_refund(variant: str, refund: JsonObject | None) -> _Response:
    """A 200 answer for another refund than the one asked for: another amount or charge."""
    base: JsonObject = (
        dict(refund)
        if refund
        else {"id": f"re_{secrets.token_hex(12)}", "status": "succeeded", "amount": 1999, "charge": "ch_x"}
    )
    if base.get("status") not in COUNTED_STATUSES:
        base["status"] = "succeeded"
        base.pop("failure_reason", None)
    if variant in ("amount", "all"):
        base["amount"] = 1
    if variant in ("charge", "all"):
        base["charge"] = f"ch_another{secrets.token_hex(6)}"
    return _Response(200, base)
