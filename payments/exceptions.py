"""The application's errors and the one place where they become HTTP.

Every error body is `{"error": {"type", "code", "message", "retryable", "request_id"},
"transaction": {...} | null}`; `error` may add `decline_code`, `provider_code` or `fields`
(the ErrorResponse schema in payments/views.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.settings import api_settings

from core.events import log_event
from core.logs.request_id import current_request_id
from payments import outcomes

if TYPE_CHECKING:
    from payments.models import Transaction

logger = logging.getLogger(__name__)


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


class PayloadTooLarge(drf_exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body is too large."
    default_code = "payload_too_large"


def error_body(
    *,
    error_type: str,
    code: str,
    message: str,
    retryable: bool,
    transaction: dict | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "error": {
            "type": error_type,
            "code": code,
            "message": message,
            "retryable": retryable,
            "request_id": current_request_id(),
            **extra,
        },
        "transaction": transaction,
    }


def _handled(response: Response) -> Response:
    """A typed 5xx is logged once, as its own event: not again by django.request as a crash."""
    if response.status_code >= 500:
        response._has_been_logged = True  # read by django.utils.log.log_response
    return response


def payment_error_response(error: PaymentError) -> Response:
    from payments.serializers import TransactionSerializer

    transaction = TransactionSerializer(error.transaction).data if error.transaction else None
    response = Response(
        error_body(
            error_type=error.error_type,
            code=error.code,
            message=error.message,
            retryable=error.retryable,
            transaction=transaction,
            **error.extra,
        ),
        status=error.http_status,
    )
    if error.retry_after_s is not None:
        response["Retry-After"] = str(error.retry_after_s)
    if error.replayed:
        response["Idempotent-Replayed"] = "true"
    if error.http_status >= 500:
        log_event(
            logger,
            "api.error_answered",
            level=logging.WARNING,
            message=f"Answered {error.http_status} {error.error_type}/{error.code}",
            http_status=error.http_status,
            error_type=error.error_type,
            code=error.code,
            transaction_id=str(error.transaction.pk) if error.transaction else None,
        )
    return _handled(response)


def internal_error_response() -> Response:
    answer = outcomes.answer("internal_error")
    body = error_body(error_type=answer.error_type, code=answer.code, message=answer.message, retryable=True)
    return Response(body, status=answer.http_status)


DRF_ERROR_TYPES: dict[type[drf_exceptions.APIException], str] = {
    drf_exceptions.NotAuthenticated: "authentication_error",
    drf_exceptions.AuthenticationFailed: "authentication_error",
    drf_exceptions.PermissionDenied: "permission_error",
    drf_exceptions.NotFound: "not_found",
    drf_exceptions.MethodNotAllowed: "invalid_request",
    drf_exceptions.NotAcceptable: "invalid_request",
    drf_exceptions.UnsupportedMediaType: "unsupported_media_type",
    drf_exceptions.ParseError: "invalid_request",
    drf_exceptions.ValidationError: "invalid_request",
    drf_exceptions.Throttled: "rate_limited",
    PayloadTooLarge: "payload_too_large",
}


def _flatten_detail(detail: Any) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{field}: {_flatten_detail(value)}" for field, value in detail.items())
    if isinstance(detail, list):
        return " ".join(_flatten_detail(item) for item in detail)
    return str(detail)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every error leaves the API in one shape."""
    from core.db import is_pool_exhausted

    if isinstance(exc, PaymentError):
        return payment_error_response(exc)
    if is_pool_exhausted(exc):
        return payment_error_response(
            DatabaseBusy("The service is busy; no database connection was free. Try again shortly.")
        )
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is down or restarting: the client can do nothing but retry (with the same
        # Idempotency-Key, which is safe). Logged here because Django no longer sees a 500.
        log_event(logger, "db.connection_error", level=logging.ERROR, message=str(exc)[:200], exc_info=True)
        return payment_error_response(
            DatabaseUnavailable("The service cannot reach its database. Try again shortly.")
        )
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if not isinstance(exc, drf_exceptions.APIException):
        # A real crash: logged once, with its traceback, on django.request (what the
        # "unhandled errors" alarm watches); the caller still gets the API's JSON shape.
        logging.getLogger("django.request").error(
            "Internal Server Error: %s",
            context["request"].path if context.get("request") else "",
            exc_info=exc,
        )
        return _handled(internal_error_response())

    error_type = next(
        (name for cls, name in DRF_ERROR_TYPES.items() if isinstance(exc, cls)), "invalid_request"
    )
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else error_type
    extra: dict[str, Any] = {}
    if isinstance(exc, drf_exceptions.ValidationError):
        # Always an object of field (or header, or parameter) to messages, as the schema says.
        detail = exc.detail
        extra["fields"] = detail if isinstance(detail, dict) else {api_settings.NON_FIELD_ERRORS_KEY: detail}
        code = "invalid_fields"
    response = Response(
        error_body(
            error_type=error_type,
            code=code,
            message=_flatten_detail(exc.detail),
            retryable=isinstance(exc, drf_exceptions.Throttled),
            **extra,
        ),
        status=exc.status_code,
    )
    if getattr(exc, "auth_header", None):
        response["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        response["Retry-After"] = str(int(exc.wait))
    return response
