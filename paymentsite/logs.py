"""How log records look and where they go: JSON (or console) lines on stdout,
secrets redacted, the request id on every line, and CloudWatch through watchtower.

`paymentsite.log.log_event` writes the records; `logging_config()` builds
settings.LOGGING, which Django applies in every process at start-up (in each
gunicorn worker after the fork, since the app is not preloaded).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import operator
import re
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
import watchtower
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.signals import request_finished

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
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
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = supplied if _VALID_REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
        request.request_id = request_id
        _request_id.set(request_id)
        authorization = request.headers.get("Authorization", "")
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


REDACTED = "[REDACTED]"
_SECRET_KEY_NAME = r"[\w-]*(?:authorization|password|passwd|secret|api[_-]?key)[\w-]*"
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # A quoted value after a secret-looking name: headers in a dict's repr,
    # botocore's b'AWS4-HMAC-SHA256 …', "password": "…".
    (
        re.compile(rf"""(?i)\b({_SECRET_KEY_NAME}['"]?\s*[:=]\s*b?)(['"])(?:(?!\2).)+\2"""),
        rf"\1\2{REDACTED}\2",
    ),
    (re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{6,}"), rf"\1 {REDACTED}"),
    (
        re.compile(
            rf"""(?i)\b({_SECRET_KEY_NAME}\s*[:=]\s*)(?!b?['"]|(?:Bearer|Basic|Token)\s)[^\s'",;&}}]+"""
        ),
        rf"\1{REDACTED}",
    ),
    # The password of a URL: mysql://user:password@host/db and other DSNs.
    (re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@"), rf"\1{REDACTED}@"),
    # Card tokens keep their prefix and last four characters, as the API shows them.
    (re.compile(r"\btok_([A-Za-z0-9_]+)"), lambda match: f"tok_…{match.group(1)[-4:]}"),
)
_SECRET_FIELD = re.compile(rf"(?i)^{_SECRET_KEY_NAME}$")
_MIN_KNOWN_SECRET_CHARS = 4


def _known_secrets() -> list[str]:
    """The configured secret values themselves, replaced wherever they appear."""
    if not settings.configured:
        return []
    candidates = [
        *_request_secrets.get(),
        getattr(settings, "PAYMENT_API_KEY", ""),
        getattr(settings, "METRICS_TOKEN", ""),
        *(database.get("PASSWORD", "") for database in getattr(settings, "DATABASES", {}).values()),
    ]
    return [value for value in candidates if isinstance(value, str) and len(value) >= _MIN_KNOWN_SECRET_CHARS]


def redact(text: str) -> str:
    for secret in _known_secrets():
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any, key: str = "") -> Any:
    if key and _SECRET_FIELD.match(key):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {name: _redact_value(item, str(name)) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    return value


class RedactSecrets(logging.Filter):
    """Scrub a record in place before any of our handlers writes it.

    A handler filter, not a logger filter, so that records from requests,
    urllib3, botocore and Django, which propagate to the root, are scrubbed too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "redacted", False):
            return True  # already scrubbed by another of our handlers
        try:
            message = record.getMessage()
        except Exception:
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = _redact_value(fields)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # Formatters use exc_text as it is; the traceback's messages are redacted once here.
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record.redacted = True
        return True


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    parts = [part for part in (record.exc_text, record.stack_info) if part]
    return "\n".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the event's fields sit at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", None),
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in (getattr(record, "fields", None) or {}).items():
            entry[f"field_{key}" if key in entry else key] = value
        exception = _exception_text(self, record)
        if exception:
            entry["exception"] = exception
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """For people at a terminal: `LOG_FORMAT=console`."""

    def format(self, record: logging.LogRecord) -> str:
        timestamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        event = getattr(record, "event", None)
        request_id = getattr(record, "request_id", None)
        fields = getattr(record, "fields", None) or {}
        line = " ".join(
            part
            for part in (
                timestamp,
                f"{record.levelname:<7}",
                record.name,
                f"[{request_id}]" if request_id else "",
                f"{event}:" if event else "",
                record.getMessage(),
                " ".join(f"{key}={value}" for key, value in fields.items()),
            )
            if part
        )
        exception = _exception_text(self, record)
        return f"{line}\n{exception}" if exception else line


def _warn(message: str) -> None:
    # stderr directly, not the logging system: CloudWatch is what is failing,
    # and `warnings` would repeat or hide it depending on the filters in force.
    print(f"paymentsite: {message}", file=sys.stderr, flush=True)


_sender = threading.local()


def _not_from_sender(record: logging.LogRecord) -> bool:
    """Drop what botocore and urllib3 log while a batch is being sent: it would feed back."""
    return not getattr(_sender, "active", False)


class CloudWatchHandler(watchtower.CloudWatchLogHandler):
    """watchtower's queue and sending thread, with our own delivery of a batch.

    watchtower creates the log group when the handler is built (a network call
    that can stall start-up) and, on failure, retries each batch five times and
    writes a warning for every try. Here the group and stream are created from
    the sending thread, botocore does the retrying (throttling included), a
    batch that still fails is dropped (stdout keeps every line), and stderr
    gets one warning when delivery starts failing and one line when it recovers.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._ready_streams: set[str] = set()
        self._failing = False
        self._dropped_batches = 0
        # Why the last batch was dropped, or None once one is delivered (read by check_logging).
        self.delivery_error: str | None = None
        super().__init__(create_log_group=False, **kwargs)
        self.addFilter(_not_from_sender)

    def _submit_batch(self, batch: list[dict[str, Any]], log_stream_name: str, max_retries: int = 0) -> None:
        if not batch:
            return
        events = sorted(batch, key=operator.itemgetter("timestamp"))
        _sender.active = True
        try:
            self._put(events, log_stream_name)
        except (BotoCoreError, ClientError) as exc:
            self._dropped_batches += 1
            self.delivery_error = f"{type(exc).__name__}: {redact(str(exc))}"
            if not self._failing:
                self._failing = True
                _warn(
                    f"cannot ship logs to CloudWatch log group {self.log_group_name!r} "
                    f"({self.delivery_error}); batches are dropped until it recovers, "
                    "logs go on on stdout."
                )
        else:
            self.delivery_error = None
            if self._failing:
                self._failing = False
                _warn(
                    f"shipping logs to CloudWatch log group {self.log_group_name!r} again; "
                    f"{self._dropped_batches} batch(es) were dropped."
                )
                self._dropped_batches = 0
        finally:
            _sender.active = False

    def _put(self, events: list[dict[str, Any]], stream: str) -> None:
        if stream not in self._ready_streams:
            self._create_stream(stream)
        put = functools.partial(
            self.cwl_client.put_log_events, logGroupName=self.log_group_name, logStreamName=stream
        )
        try:
            put(logEvents=events)
        except self.cwl_client.exceptions.ResourceNotFoundException:
            # Deleted while we were running (retention clean-up, an operator): make it again.
            self._create_stream(stream)
            put(logEvents=events)

    def _create_stream(self, stream: str) -> None:
        """Needs logs:CreateLogGroup only when the group is missing."""
        exceptions = self.cwl_client.exceptions
        try:
            self.cwl_client.create_log_stream(logGroupName=self.log_group_name, logStreamName=stream)
        except exceptions.ResourceAlreadyExistsException:
            pass
        except exceptions.ResourceNotFoundException:
            with contextlib.suppress(exceptions.ResourceAlreadyExistsException):
                self.cwl_client.create_log_group(logGroupName=self.log_group_name)
            self.cwl_client.create_log_stream(logGroupName=self.log_group_name, logStreamName=stream)
        self._ready_streams.add(stream)


def cloudwatch_handler(
    *, log_group: str, region: str | None, endpoint_url: str | None, send_interval_s: float
) -> logging.Handler:
    """Build the CloudWatch handler, or a NullHandler and one warning: never stop start-up.

    Called by logging.config in each process; it makes no network call (the
    sending thread starts with the first record).
    """
    try:
        client = boto3.session.Session().client(
            "logs",
            region_name=region or None,
            endpoint_url=endpoint_url or None,
            config=Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3}),
        )
        return CloudWatchHandler(
            log_group_name=log_group,
            log_stream_name="{machine_name}/{process_id}",
            boto3_client=client,
            send_interval=send_interval_s,
        )
    except Exception as exc:
        _warn(f"CloudWatch logging is off ({type(exc).__name__}: {redact(str(exc))}); logs go on on stdout.")
        return logging.NullHandler()


def logging_config(
    *,
    level: str,
    log_format: str,
    log_queries: bool,
    cloudwatch_log_group: str | None,
    aws_region: str | None,
    cloudwatch_endpoint_url: str | None,
    cloudwatch_send_interval_s: float,
) -> dict[str, Any]:
    """settings.LOGGING: one stream of lines on stdout, and CloudWatch when a log group is set."""
    filters = ["request_id", "redact"]
    handlers: dict[str, dict[str, Any]] = {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": log_format,
            "filters": filters,
        },
    }
    if cloudwatch_log_group:
        handlers["cloudwatch"] = {
            "()": "paymentsite.logs.cloudwatch_handler",
            "log_group": cloudwatch_log_group,
            "region": aws_region,
            "endpoint_url": cloudwatch_endpoint_url,
            "send_interval_s": cloudwatch_send_interval_s,
            "formatter": "json",
            "filters": filters,
        }
    # Django's own loggers stay at INFO or quieter: its DEBUG lines are for its developers.
    django_level = "INFO" if level == "DEBUG" else level
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "paymentsite.logs.RequestIdFilter"},
            "redact": {"()": "paymentsite.logs.RedactSecrets"},
        },
        "formatters": {
            "json": {"()": "paymentsite.logs.JsonFormatter"},
            "console": {"()": "paymentsite.logs.ConsoleFormatter"},
        },
        "handlers": handlers,
        "root": {"handlers": list(handlers), "level": level},
        "loggers": {
            # Django's defaults send these to stderr in another format; one stream is easier to ship.
            "django": {"handlers": [], "level": django_level, "propagate": True},
            "django.server": {"handlers": [], "level": django_level, "propagate": True},
            "django.db.backends": {"level": "DEBUG" if log_queries else "INFO"},
            "botocore": {"level": "WARNING"},
            "boto3": {"level": "WARNING"},
        },
    }


def active_cloudwatch_handler() -> CloudWatchHandler | None:
    """The CloudWatch handler this process's logging ships through, if any."""
    return next((h for h in logging.getLogger().handlers if isinstance(h, CloudWatchHandler)), None)
