"""A bounded lookup when a client reads a charge whose outcome is unknown.

A client polling `GET /api/v1/charges/{id}` learns the outcome as soon as the provider has it,
not when reconcile_payments next runs. At most one lookup per charge per
PAYMENT_LOOKUP_ON_READ_S, whoever reads it (the claim's conditional UPDATE on `claimed_at`, by
the database's clock, decides, so many readers on many hosts make one lookup); only with a
free call slot (the bulkhead) and the breaker closed, else the read answers the row as it is.
The lookup is reconcile's own (`support.settle_lookup`): a charge found settles at once; "no such
charge" proves nothing before the window and leaves the row unknown, as it was.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import DateTimeField, ExpressionWrapper, Q

from core.db import DatabaseNow
from payments.errors import ProviderUnavailable
from payments.models import Transaction
from payments.services.claims import claim, isolated
from payments.services.settlement import provider_call_slot
from payments.services.support import reconcile_claimed
from payments.transitions import Actor

ACTOR = "api read"


def charge_lookup_on_read(txn: Transaction) -> Transaction:
    """The charge as it stands after at most one bounded lookup (only when it is unknown)."""
    interval_s = settings.PAYMENT_LOOKUP_ON_READ_S
    if txn.status != Transaction.Status.UNKNOWN or interval_s <= 0:
        return txn
    since = ExpressionWrapper(DatabaseNow() - timedelta(seconds=interval_s), output_field=DateTimeField())
    candidates = Transaction.objects.filter(
        Q(claimed_at__lt=since) | Q(claimed_at__isnull=True), pk=txn.pk, status=Transaction.Status.UNKNOWN
    )
    try:
        with provider_call_slot():
            claimed = claim(candidates, by=Actor.RECONCILE)
            if claimed is None:
                return txn  # looked up a moment ago, or being looked up now
            isolated(claimed, ACTOR, reconcile_claimed, by=Actor.RECONCILE)
    except ProviderUnavailable:
        return txn  # the breaker is open or every call slot is taken: answer at once
    return Transaction.objects.prefetch_related("attempt_log", "refunds").get(pk=txn.pk)
