"""manage.py check_logging: prove that log events reach the configured CloudWatch log group.

Emits one event of each kind in the event catalogue (core.events.EVENT_CATALOGUE)
at its usual level, each with this run's `check_id` field, through the process's
own logging (so through the same handler and sending thread as the service);
flushes the handler; reads the group back with filter_log_events (the quoted
check id as the filter pattern, which every CloudWatch-compatible endpoint
honours) until every kind has arrived or --wait seconds have passed; prints one
line per kind.

Exit status: 0 every kind arrived; 1 shipping failed or a kind is missing;
2 CloudWatch is not configured (CLOUDWATCH_LOG_GROUP unset), or --wait is not a number
from 0 to 3600 (argparse's usage error, before anything is emitted).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core import options as option_types
from core.events import EVENT_CATALOGUE, log_event
from core.logs.cloudwatch import CloudWatchHandler, active_cloudwatch_handler
from core.logs.redaction import redact

logger = logging.getLogger("paymentsite.check_logging")

POLL_INTERVAL_S = 1.0
MAX_WAIT_S = 3600  # nan or inf would poll for ever


class Command(BaseCommand):
    help = "Emit one event of each catalogued kind, read them back from CloudWatch, report what arrived."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--wait",
            type=option_types.number(0, MAX_WAIT_S),
            default=30.0,
            help=(
                "seconds to wait for the events to be readable from the log group "
                f"(default 30; 0 to {MAX_WAIT_S})"
            ),
        )

    def handle(self, *args: Any, wait: float, **options: Any) -> None:
        if not settings.CLOUDWATCH_LOG_GROUP:
            raise CommandError(
                "CloudWatch is not configured: set CLOUDWATCH_LOG_GROUP (and AWS_REGION).", returncode=2
            )
        handler = active_cloudwatch_handler()
        if handler is None:
            raise CommandError(
                "CloudWatch logging is off in this process (see the line above).", returncode=1
            )

        check_id = uuid.uuid4().hex
        for event, level in EVENT_CATALOGUE.items():
            log_event(
                logger,
                event,
                level=level,
                message=f"check_logging {check_id}: a test event, not a real {event}",
                check_id=check_id,
            )
        handler.flush()
        failure = handler.delivery_error
        arrived: set[str] = set()
        if failure is None:
            arrived, failure = self._read_back(handler, check_id, deadline=time.monotonic() + wait)

        for event in EVENT_CATALOGUE:
            self.stdout.write(f"{event:<32} {'arrived' if event in arrived else 'missing'}")
        missing = len(EVENT_CATALOGUE) - len(arrived)
        if failure is not None:
            raise CommandError(f"shipping to {handler.log_group_name!r} failed: {failure}", returncode=1)
        if missing:
            raise CommandError(
                f"{missing} of {len(EVENT_CATALOGUE)} events did not arrive in {handler.log_group_name!r} "
                f"within {wait:g} s (check_id {check_id}).",
                returncode=1,
            )
        self.stdout.write(
            f"all {len(EVENT_CATALOGUE)} events arrived in {handler.log_group_name!r} (check_id {check_id})."
        )

    def _read_back(
        self, handler: CloudWatchHandler, check_id: str, *, deadline: float
    ) -> tuple[set[str], str | None]:
        """The kinds found in the group for this check, and the read error if reading failed."""
        arrived: set[str] = set()
        while True:
            try:
                pages = handler.cwl_client.get_paginator("filter_log_events").paginate(
                    logGroupName=handler.log_group_name, filterPattern=f'"{check_id}"'
                )
                for page in pages:
                    for shipped in page["events"]:
                        entry = _json_or_empty(shipped["message"])
                        if entry.get("check_id") == check_id:
                            arrived.add(entry.get("event"))
            except (BotoCoreError, ClientError) as exc:
                return arrived, f"reading the group back: {type(exc).__name__}: {redact(str(exc))}"
            if arrived >= EVENT_CATALOGUE.keys() or time.monotonic() >= deadline:
                return arrived & EVENT_CATALOGUE.keys(), None
            time.sleep(POLL_INTERVAL_S)


def _json_or_empty(message: str) -> dict[str, Any]:
    try:
        entry = json.loads(message)
    except ValueError:
        return {}
    return entry if isinstance(entry, dict) else {}
