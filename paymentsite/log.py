"""Structured log events: a stable `event` name plus the event's own fields."""

from __future__ import annotations

import logging
from typing import Any


def log_event(
    logger: logging.Logger,
    event: str,
    *,
    level: int = logging.INFO,
    message: str = "",
    exc_info: bool = False,
    **fields: Any,
) -> None:
    """Log one event. Fields go under `fields` so they never clash with LogRecord's own."""
    logger.log(level, message or event, extra={"event": event, "fields": fields}, exc_info=exc_info)
