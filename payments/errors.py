"""The application's errors: raised by the services, one row of payments.outcomes each.

They carry what the answer needs (type, code, message, status, whether to retry, the
transaction); payments.api.exceptions renders them as HTTP, in one place.
"""

from __future__ import annotations

from typing import Any

from payments import outcomes, refund_transitions, transitions
from payments.models import Refund, Transaction


class PaymentError(Exception):
    """An answer of the outcome table (payments.outcomes) raised as an exception.

    The class names the row; its HTTP status, error type, default code, retryable flag and
    message come from the table, so the API cannot drift from the documented vocabulary.
    """

    answer_name = "invalid_request"
    retry_after_s: int | None = None

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        transaction: Transaction | None = None,
        replayed: bool = False,
        extra: dict[str, Any] | None = None,
        retry_after_s: int | None = None,
        refund: Refund | None = None,
    ) -> None:
        answer = outcomes.answer(self.answer_name)
        self.answer = answer
        self.message = message or answer.message
        super().__init__(self.message)
        self.http_status = answer.http_status
        self.error_type = answer.error_type
        self.code = code or answer.code
        self.retryable = answer.retryable
        self.transaction = transaction
        self.refund = refund  # set on a refund's answers, beside the charge (`transaction`)
        self.replayed = replayed
        self.extra = extra or {}
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


class InvalidRequest(PaymentError):
    answer_name = "invalid_request"


class NotCancelable(PaymentError):
    answer_name = "not_cancelable"


class IdempotencyConflict(PaymentError):
    """The same key with another body: this request was not sent."""

    answer_name = "key_reused"


class RequestInProgress(PaymentError):
    answer_name = "in_progress"
    retry_after_s = 1


class CardDeclined(PaymentError):
    answer_name = "declined"


class ProviderRejected(PaymentError):
    answer_name = "rejected"


class ChargeCanceled(PaymentError):
    answer_name = "canceled"


class OutcomeUnknown(PaymentError):
    """The provider may have charged: never reported as a failure, never as "not charged"."""

    answer_name = "outcome_unknown"


class RetryScheduled(PaymentError):
    answer_name = "retry_scheduled"


class NeedsReview(PaymentError):
    answer_name = "needs_review"


class ProviderUnavailable(PaymentError):
    answer_name = "provider_unavailable"
    retry_after_s = 1


class DatabaseBusy(PaymentError):
    answer_name = "database_busy"
    retry_after_s = 1


class DatabaseUnavailable(PaymentError):
    answer_name = "database_unavailable"
    retry_after_s = 1


def error_for(txn: Transaction, *, replayed: bool = False) -> PaymentError | None:
    """The answer the API gives for this transaction as it stands, as its row of
    payments.outcomes: None once succeeded. The charge's answer and the transaction's own
    `error` (payments.api.serializers) are both this, so they speak one vocabulary."""
    Status = Transaction.Status
    if txn.status == Status.SUCCEEDED:
        return None
    if txn.status == Status.DECLINED and txn.error_type == Transaction.ErrorType.PROVIDER_REJECTED:
        # error_code is the provider's reason, when it gave one.
        reason = {"provider_code": txn.error_code} if txn.error_code else {}
        return ProviderRejected(transaction=txn, replayed=replayed, extra=reason)
    if txn.status == Status.DECLINED:
        return CardDeclined(transaction=txn, replayed=replayed, extra={"decline_code": txn.error_code})
    if txn.status == Status.CANCELED:
        return ChargeCanceled(transaction=txn, replayed=replayed)
    if txn.status == Status.PENDING:
        return RequestInProgress(transaction=txn)
    if txn.status == Status.UNKNOWN:
        return OutcomeUnknown(code=txn.error_code or "interrupted", transaction=txn, replayed=replayed)
    if transitions.next_step(txn)["action"] == "review":
        # Tries spent, or flagged by support: nothing will send it again on its own.
        return NeedsReview(transaction=txn, replayed=replayed)
    return RetryScheduled(code=txn.error_code or "provider_error", transaction=txn, replayed=replayed)


class NotRefundable(PaymentError):
    answer_name = "not_refundable"


class RefundTooLarge(PaymentError):
    answer_name = "refund_too_large"


class RefundUnavailable(PaymentError):
    answer_name = "refund_unavailable"
    retry_after_s = 1


class RefundError(PaymentError):
    """A refund's own answer (its row of payments.outcomes.refunds), named per instance."""

    answer_name = "refund_outcome_unknown"

    def __init__(self, answer_name: str = "refund_outcome_unknown", **kwargs: Any) -> None:
        self.answer_name = answer_name
        if answer_name == "refund_in_progress":
            self.retry_after_s = 1
        super().__init__(**kwargs)


def refund_error_for(refund: Refund, *, charge: Transaction, replayed: bool = False) -> PaymentError | None:
    """The API's answer for this refund as it stands: None when it succeeded or the provider
    holds it (the refund itself is the answer, 201 or 202)."""
    name = refund_transitions.refund_answer_name(refund)
    if name in ("refund_succeeded", "refund_pending"):
        return None
    code = refund.error_code or None
    extra: dict[str, Any] = {}
    if name == "refund_failed":
        code = None  # the answer's own code; the provider's reason is provider_code
        extra = {"provider_code": refund.error_code} if refund.error_code else {}
    if name in ("refund_in_progress", "refund_canceled"):
        code = None
    return RefundError(name, code=code, transaction=charge, refund=refund, replayed=replayed, extra=extra)
