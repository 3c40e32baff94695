"""Structured log events: a stable `event` name plus the event's own fields.

EVENT_CATALOGUE is the list of every event the service logs, with its usual
level; README.md "Event catalogue" documents each, `manage.py check_logging`
emits one of each, and a test checks that the code logs no event missing here.
"""

from __future__ import annotations

import logging
from typing import Any

EVENT_CATALOGUE: dict[str, int] = {
    "payment.succeeded": logging.INFO,
    "payment.declined": logging.INFO,
    "payment.outcome_unknown": logging.WARNING,
    "payment.failed": logging.WARNING,
    "payment.settle_failed": logging.ERROR,
    "provider.misconfigured": logging.ERROR,
    "payment.retry_scheduled": logging.INFO,
    "payment.needs_review": logging.WARNING,
    "payment.retried": logging.INFO,
    "payment.reconciled": logging.INFO,
    "payment.canceled": logging.INFO,
    "payment.call_interrupted": logging.WARNING,
    "payment.claim_fenced": logging.WARNING,
    "payment.charged_late": logging.ERROR,
    "payment.answer_mismatch": logging.ERROR,
    "payment.command_error": logging.ERROR,
    "refund.succeeded": logging.INFO,
    "refund.pending": logging.INFO,
    "refund.outcome_unknown": logging.WARNING,
    "refund.failed": logging.WARNING,
    "refund.succeeded_late": logging.ERROR,
    "refund.settle_failed": logging.ERROR,
    "refund.claim_fenced": logging.WARNING,
    "refund.reconciled": logging.INFO,
    "refund.canceled": logging.INFO,
    "worker.started": logging.INFO,
    "worker.stopped": logging.INFO,
    "worker.error": logging.ERROR,
    "provider.event_applied": logging.INFO,
    "provider.event_unchanged": logging.INFO,
    "provider.event_contradicted": logging.ERROR,
    "provider.event_lookup": logging.WARNING,
    "provider.event_unplaced": logging.WARNING,
    "provider.event_duplicate": logging.INFO,
    "provider.event_unverified": logging.WARNING,
    "provider.attempt_failed": logging.INFO,
    "webhook.endpoint_created": logging.INFO,
    "webhook.secret_rotated": logging.INFO,
    "webhook.delivered": logging.INFO,
    "webhook.delivery_failed": logging.WARNING,
    "webhook.delivery_given_up": logging.ERROR,
    "webhook.endpoint_disabled": logging.ERROR,
    "webhook.delivery_replayed": logging.INFO,
    "api.error_answered": logging.WARNING,
    "breaker.opened": logging.WARNING,
    "breaker.closed": logging.INFO,
    "db.pool_exhausted": logging.WARNING,
    "db.connection_error": logging.ERROR,
    "health.status_changed": logging.INFO,
    "health.probe_error": logging.ERROR,
    "metrics.publish_error": logging.ERROR,
    "metrics.token_missing": logging.WARNING,
    "config.invalid": logging.CRITICAL,
}


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
