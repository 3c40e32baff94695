from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.management.base import CommandParser
from django.db.models import QuerySet
from django.utils import timezone

from payments import selectors, services
from payments.management.commands._batch import BatchCommand
from payments.models import Transaction
from payments.services import ActionResult

ACTOR = "retry_failed_payments"


class Command(BatchCommand):
    help = (
        "Send due failed payments to the provider again, with their stored idempotency key, so "
        "nothing is charged twice. Safe to run on several hosts at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--max-attempts",
            type=int,
            default=None,
            help="Leave transactions with this many attempts alone (default: PAYMENT_MAX_ATTEMPTS).",
        )

    def _max_attempts(self, options: dict[str, Any]) -> int:
        return options["max_attempts"] or settings.PAYMENT_MAX_ATTEMPTS

    def work_next(self, *, skip_ids: set[uuid.UUID], options: dict[str, Any]) -> ActionResult | None:
        return services.charge_retry_next(
            max_attempts=self._max_attempts(options), skip_ids=skip_ids, actor=ACTOR
        )

    def work_one(self, *, transaction_id: uuid.UUID, options: dict[str, Any]) -> ActionResult:
        return services.charge_retry(transaction_id=transaction_id, actor=ACTOR)

    def dry_run_candidates(self, options: dict[str, Any]) -> QuerySet[Transaction]:
        if options["transaction_ids"]:
            return Transaction.objects.filter(
                pk__in=options["transaction_ids"], status=Transaction.Status.FAILED
            )
        return selectors.due_for_retry(now=timezone.now(), max_attempts=self._max_attempts(options))
