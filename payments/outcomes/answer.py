"""One answer of the outcome table (payments.outcomes)."""

from __future__ import annotations

from dataclasses import dataclass

YES, NO, MAYBE = "yes", "no", "maybe"


@dataclass(frozen=True)
class Answer:
    name: str
    happened: str  # what the provider did, or what failed
    status: str  # the transaction's status afterwards; "-" when nothing is written
    error_type: str  # the API's error.type ("" for a success)
    code: str  # the API's error.code; "<cause>" when it names the cause
    http_status: int
    retryable: bool  # may the caller send the same request (same Idempotency-Key) again?
    charged: str  # yes / no / maybe
    next_step: str  # what the service does next, on its own
    message: str  # the API's error.message
    page: str  # what the payment page tells the payer
    operation: str = "charge"  # charge or refund; for a refund, `charged` says whether it was refunded
