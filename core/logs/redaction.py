"""Secrets never reach a log line: configured secret values, credential-looking fields and
values, DSN passwords and card tokens are replaced before any handler writes a record."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from django.conf import settings

from core.logs.request_id import current_request_secrets

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
        *current_request_secrets(),
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
