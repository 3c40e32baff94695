"""The application's errors and the one place where they become HTTP.

Every error body is `{"error": {"type", "code", "message", "retryable"},
"transaction": {...} | null}` (DESIGN.md, "The API").
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

from paymentsite.log import log_event

if TYPE_CHECKING:
    from payments.models import Transaction

logger = logging.getLogger(__name__)


class PaymentError(Exception):
    http_status = status.HTTP_400_BAD_REQUEST
    error_type = "invalid_request"
    code = "invalid_request"
    retryable = False
    retry_after_s: int | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        transaction: Transaction | None = None,
        replayed: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.transaction = transaction
        self.replayed = replayed
        self.extra = extra or {}


class InvalidRequest(PaymentError):
    pass


class IdempotencyConflict(PaymentError):
    http_status = status.HTTP_409_CONFLICT
    error_type = "idempotency_error"


class CardDeclined(PaymentError):
    http_status = status.HTTP_402_PAYMENT_REQUIRED
    error_type = "card_error"
    code = "card_declined"


class ChargeCanceled(PaymentError):
    http_status = status.HTTP_409_CONFLICT
    error_type = "charge_canceled"
    code = "charge_canceled"


class ProviderFailed(PaymentError):
    """The provider never confirmed the charge; it is safe to try again."""

    http_status = status.HTTP_502_BAD_GATEWAY
    error_type = "provider_error"
    code = "provider_error"
    retryable = True


class ProviderTimeout(ProviderFailed):
    http_status = status.HTTP_504_GATEWAY_TIMEOUT
    error_type = "provider_timeout"
    code = "provider_timeout"


class ProviderUnavailable(PaymentError):
    http_status = status.HTTP_503_SERVICE_UNAVAILABLE
    error_type = "provider_unavailable"
    code = "circuit_open"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: int, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


class DatabaseBusy(PaymentError):
    http_status = status.HTTP_503_SERVICE_UNAVAILABLE
    error_type = "database_busy"
    code = "pool_exhausted"
    retryable = True
    retry_after_s = 1


class DatabaseUnavailable(DatabaseBusy):
    code = "database_unavailable"


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
        "error": {"type": error_type, "code": code, "message": message, "retryable": retryable, **extra},
        "transaction": transaction,
    }


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
    return response


_DRF_ERROR_TYPES: dict[type[drf_exceptions.APIException], str] = {
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
    from payments.db import is_pool_exhausted

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
        return None  # Django's 500 handling logs it; the body stays generic.

    error_type = next(
        (name for cls, name in _DRF_ERROR_TYPES.items() if isinstance(exc, cls)), "invalid_request"
    )
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else error_type
    extra: dict[str, Any] = {}
    if isinstance(exc, drf_exceptions.ValidationError):
        extra["fields"] = exc.detail
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
