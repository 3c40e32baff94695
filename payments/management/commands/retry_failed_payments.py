from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from payments import selectors, services, transitions
from payments.batch import BatchCommand
from payments.models import Transaction
from payments.services import ActionResult

ACTOR = "retry_failed_payments"


class Command(BatchCommand):
    help = (
        "Send due failed payments (known not charged) to the provider again, with their stored "
        "idempotency key, so nothing is charged twice; flag for review those that reached "
        "PAYMENT_MAX_ATTEMPTS. Safe to run on several hosts at once."
    )

    def before_work(self, options: dict[str, Any]) -> None:
        services.flag_exhausted()

    def work_next(self, *, skip_ids: set[uuid.UUID], options: dict[str, Any]) -> ActionResult | None:
        return services.charge_retry_next(skip_ids=skip_ids, actor=ACTOR)

    def work_one(self, *, transaction_id: uuid.UUID, options: dict[str, Any]) -> ActionResult:
        return services.charge_retry(transaction_id=transaction_id, actor=ACTOR)

    def dry_run_candidates(self, options: dict[str, Any]) -> QuerySet[Transaction]:
        if options["transaction_ids"]:
            return Transaction.objects.filter(transitions.retryable_q(), pk__in=options["transaction_ids"])
        return selectors.due_for_retry(now=timezone.now())
