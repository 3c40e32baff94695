"""Where the application's errors become HTTP: the one error body, and DRF's EXCEPTION_HANDLER.

Every error body is `{"error": {"type", "code", "message", "retryable", "request_id"},
"transaction": {...} | null}`; `error` may add `decline_code`, `provider_code` or `fields`
(the ErrorResponse schema in payments/api/schema.py).
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.settings import api_settings

from core import metrics
from core.events import log_event
from core.logs.request_id import current_request_id
from payments import outcomes
from payments.errors import DatabaseBusy, DatabaseUnavailable, PaymentError, ProviderUnavailable

logger = logging.getLogger("payments.exceptions")  # the name it had before the move


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
    from payments.api.serializers import TransactionSerializer

    transaction = TransactionSerializer(error.transaction).data if error.transaction else None
    body = error_body(
        error_type=error.error_type,
        code=error.code,
        message=error.message,
        retryable=error.retryable,
        transaction=transaction,
        **error.extra,
    )
    if error.refund is not None or error.answer.operation == "refund":
        from payments.api.refund_serializers import RefundSerializer

        body["refund"] = RefundSerializer(error.refund).data if error.refund else None
    response = Response(body, status=error.http_status)
    if error.retry_after_s is not None:
        response["Retry-After"] = str(error.retry_after_s)
    if error.replayed:
        response["Idempotent-Replayed"] = "true"
    if isinstance(error, ProviderUnavailable):
        metrics.CHARGE_REFUSALS.labels(error.code).inc()  # a charge refused: nothing was sent
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
