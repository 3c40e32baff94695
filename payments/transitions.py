"""What happens next to a payment, decided in one place.

`next_step` is what the service will do with a payment on its own; the API, the admin and
the payment page show it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings

from payments.models import Transaction

NEXT_ACTIONS = {
    "none": "Final: nothing more will happen.",
    "wait": "A request is working on it right now; ask again in a moment.",
    "retry": "Not charged; the service sends it again at `at` unless it is canceled first.",
    "verify": "The provider may have charged it; reconcile_payments asks the provider after `at`.",
    "review": "Not charged and never sent again automatically; support decides.",
}


def next_step(txn: Transaction) -> dict[str, Any]:
    """What the service will do next with this payment, on its own."""
    Status = Transaction.Status
    if txn.status == Status.PENDING:
        return {"action": "wait", "at": None}
    if txn.status == Status.UNKNOWN:
        started = txn.charge_started_at or txn.created_at
        at = started + timedelta(seconds=settings.PAYMENT_RECONCILE_AFTER_S) if started else None
        return {"action": "verify", "at": at}
    if txn.status == Status.FAILED:
        if txn.needs_review or txn.next_retry_at is None or txn.attempts >= settings.PAYMENT_MAX_ATTEMPTS:
            return {"action": "review", "at": None}
        return {"action": "retry", "at": txn.next_retry_at}
    return {"action": "none", "at": None}
