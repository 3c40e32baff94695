"""Secrets never reach a log line: configured secret values, credential-looking fields and
values, DSN passwords and card sources are replaced before any handler writes a record.

A card source is whatever the API accepts as `source` (`tok_visa`, `pm_…`, `card_…`, `src_…`,
dashes, or no prefix at all), so its shape alone cannot find it. It is shown masked, prefix and
last four characters (`tok_…visa`, as the API and the admin show it), wherever it is found:

- every value the service has in hand: the API's validation and the model's `source` column note
  each value they see (`note_card_source`), and this thread's later lines (the SQL of a query log,
  `DB_LOG_QUERIES`, with the value in quotes and in `args=`; a provider's message; a traceback)
  show it masked. Noted for the request (cleared when it finishes), or the last 64 in a command;
- a field named `source`, and `source: "…"` / `source='…'` / `"source" = '…'` / `source=…` in any
  text (JSON bodies, reprs, SQL, form bodies);
- the common prefixed shapes anywhere (`tok_`, `pm_`, `card_`, `src_`, with `-` and `_`).
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.signals import request_finished

from core.logs.request_id import current_request_secrets

REDACTED = "[REDACTED]"
SOURCE_FIELD = "source"
_CARD_SOURCES_KEPT = 64
# A value this short is shown whole by its mask anyway (it keeps four characters).
_MIN_NOTED_SOURCE_CHARS = 5
_card_sources: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("card_sources", default=())


def mask_source(source: str) -> str:
    """Keep the prefix and the last four characters: tok_visa -> tok_…visa, 4242abcd -> …abcd."""
    prefix, _, rest = source.partition("_")
    if not rest:
        return "…" + source[-4:]
    return f"{prefix}_…{rest[-4:]}"


def note_card_source(value: Any) -> None:
    """Shown masked in every later log line of this request (or of this command's last rows)."""
    if not isinstance(value, str) or len(value) < _MIN_NOTED_SOURCE_CHARS or "…" in value:
        return
    noted = _card_sources.get()
    if value not in noted:
        _card_sources.set((*noted, value)[-_CARD_SOURCES_KEPT:])


def forget_card_sources(**kwargs: Any) -> None:
    _card_sources.set(())


request_finished.connect(forget_card_sources, dispatch_uid="paymentsite.logs.card_sources")
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
    # A source after its name, quoted or not: JSON bodies, reprs, SQL (`"source" = '…'`), forms.
    (
        re.compile(rf"""(?i)(\b{SOURCE_FIELD}[`'"]?\s*[:=]\s*b?)(['"])((?:(?!\2).)+)\2"""),
        lambda match: f"{match.group(1)}{match.group(2)}{mask_source(match.group(3))}{match.group(2)}",
    ),
    (
        re.compile(rf"""(?i)(\b{SOURCE_FIELD}[`'"]?\s*[:=]\s*)(?!b?['"])([^\s'"`,;&}}\])]+)"""),
        lambda match: f"{match.group(1)}{mask_source(match.group(2))}",
    ),
    # The common prefixed shapes anywhere, dashes included; not the API's own codes card_error
    # and card_declined.
    (
        re.compile(r"\b(tok|pm|card|src)_(?!(?:error|declined)\b)([A-Za-z0-9_-]+)"),
        lambda match: f"{match.group(1)}_…{match.group(2)[-4:]}",
    ),
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
    for source in sorted(_card_sources.get(), key=len, reverse=True):
        text = text.replace(source, mask_source(source))
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any, key: str = "") -> Any:
    if key and _SECRET_FIELD.match(key):
        return REDACTED
    if key.lower() == SOURCE_FIELD and isinstance(value, str):
        return mask_source(redact(value))
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
