from __future__ import annotations

import argparse
import re
import uuid
from datetime import timedelta
from typing import Any

from django.core.management.base import CommandParser
from django.db.models import Q, QuerySet
from django.utils import timezone

from payments import selectors, services
from payments.management.commands._batch import BatchCommand
from payments.models import Transaction
from payments.services import ActionResult

ACTOR = "reconcile_payments"
_DURATION = re.compile(r"^(\d+)([smh]?)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "": 60, "h": 3600}


def duration(value: str) -> timedelta:
    """ "90s", "10m", "1h"; a bare number is minutes."""
    match = _DURATION.match(value.strip())
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration such as 90s, 10m or 1h")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


class Command(BatchCommand):
    help = (
        "Ask the provider what became of payments whose outcome is unknown: pending ones older "
        "than --stale-after (their process died mid-call) and failed ones that timed out. Found: "
        "succeeded or declined; not found: failed and retryable; provider down: left as they were."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--stale-after",
            type=duration,
            default=timedelta(minutes=10),
            metavar="DURATION",
            help="Pending for longer than this means the process died (default 10m).",
        )

    def work_next(self, *, skip_ids: set[uuid.UUID], options: dict[str, Any]) -> ActionResult | None:
        return services.charge_reconcile_next(
            stale_after=options["stale_after"], skip_ids=skip_ids, actor=ACTOR
        )

    def work_one(self, *, transaction_id: uuid.UUID, options: dict[str, Any]) -> ActionResult:
        return services.charge_reconcile(
            transaction_id=transaction_id, actor=ACTOR, stale_after=options["stale_after"]
        )

    def dry_run_candidates(self, options: dict[str, Any]) -> QuerySet[Transaction]:
        updated_before = timezone.now() - options["stale_after"]
        if options["transaction_ids"]:
            return Transaction.objects.filter(pk__in=options["transaction_ids"]).filter(
                Q(status=Transaction.Status.FAILED)
                | Q(status=Transaction.Status.PENDING, updated_at__lt=updated_before)
            )
        return selectors.to_reconcile(updated_before=updated_before)
