"""How a log record looks: one JSON object per line, or a line for people at a terminal."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any


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
