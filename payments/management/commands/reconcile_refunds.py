from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet

from payments import refund_transitions, services
from payments.batch import BatchCommand
from payments.models import Refund
from payments.services import ActionResult

ACTOR = "reconcile_refunds"


class Command(BatchCommand):
    help = (
        "Ask the provider what became of refunds whose outcome is unknown, those it holds (it "
        "answered pending), and those abandoned mid-call. Found: succeeded or failed; not found "
        "once no attempt can be in flight (PAYMENT_RECONCILE_AFTER_S after the call began): failed, "
        "not refunded; provider unreachable: left as they were (exit 1). --id takes refund ids."
    )
    model = Refund

    def work_next(self, *, skip_ids: set[uuid.UUID], options: dict[str, Any]) -> ActionResult | None:
        return services.refund_reconcile_next(skip_ids=skip_ids, actor=ACTOR)

    def work_one(self, *, transaction_id: uuid.UUID, options: dict[str, Any]) -> ActionResult:
        return services.refund_reconcile(refund_id=transaction_id, actor=ACTOR)

    def dry_run_candidates(self, options: dict[str, Any]) -> QuerySet[Refund]:
        candidates = services.refunds_to_reconcile()
        if options["transaction_ids"]:
            candidates = Refund.objects.filter(
                refund_transitions.refund_reconcilable_q(), pk__in=options["transaction_ids"]
            )
        return candidates
