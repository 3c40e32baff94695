from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet

from payments import selectors, services, transitions
from payments.batch import BatchCommand
from payments.models import Transaction
from payments.services import ActionResult

ACTOR = "reconcile_payments"


class Command(BatchCommand):
    help = (
        "Ask the provider what became of payments whose outcome is unknown, and of pending ones "
        "abandoned mid-call, once no attempt can still be in flight (PAYMENT_RECONCILE_AFTER_S "
        "after the call began). Found: succeeded or declined; not found: failed and retried later; "
        "provider unreachable: left as they were (exit 1)."
    )

    def work_next(self, *, skip_ids: set[uuid.UUID], options: dict[str, Any]) -> ActionResult | None:
        return services.charge_reconcile_next(skip_ids=skip_ids, actor=ACTOR)

    def work_one(self, *, transaction_id: uuid.UUID, options: dict[str, Any]) -> ActionResult:
        return services.charge_reconcile(transaction_id=transaction_id, actor=ACTOR)

    def dry_run_candidates(self, options: dict[str, Any]) -> QuerySet[Transaction]:
        if options["transaction_ids"]:
            return Transaction.objects.filter(transitions.reconcilable_q(), pk__in=options["transaction_ids"])
        return selectors.to_reconcile()
