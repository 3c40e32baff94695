"""The request id on every log line, and the caller's credentials for the redaction filter.

The id is the caller's X-Request-ID when it is safe to log, else a new one; it is echoed back.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.signals import request_finished

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_META = "HTTP_X_REQUEST_ID"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
# The caller's credentials, redacted wherever they show up during the request,
# e.g. the DRF token or the session key in the SQL of a DEBUG query log.
_request_secrets: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "request_secrets", default=()
)


def current_request_id() -> str | None:
    """The id of the request this thread is serving (None outside a request)."""
    return _request_id.get()


def current_request_secrets() -> tuple[str, ...]:
    """The credentials the caller of this request presented (empty outside a request)."""
    return _request_secrets.get()


def _forget_request(**kwargs: Any) -> None:
    _request_id.set(None)
    _request_secrets.set(())


class RequestIdMiddleware:
    """Take the caller's X-Request-ID when it is safe to log, else make one; echo it back.

    It also notes the caller's credentials for the redaction filter.

    Both are cleared on `request_finished` rather than when this middleware
    returns, so that Django's own "Not Found"/"Internal Server Error" lines,
    written after the middleware chain, carry it too.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        request_finished.connect(_forget_request, dispatch_uid="paymentsite.logs.request")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # META rather than request.headers, which copies every header into a dict of its own.
        supplied = request.META.get(REQUEST_ID_META, "")
        request_id = supplied if _VALID_REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
        request.request_id = request_id
        _request_id.set(request_id)
        authorization = request.META.get("HTTP_AUTHORIZATION", "")
        _request_secrets.set(
            (
                authorization.partition(" ")[2].strip() or authorization,
                request.COOKIES.get(settings.SESSION_COOKIE_NAME, ""),
            )
        )
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        return True
