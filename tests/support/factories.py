"""Transactions in the states the support tools work on, made through the real charge path
where one exists and written directly where it cannot be (a process that died mid-call)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from payments import services
from payments.errors import PaymentError
from payments.models import Refund, Transaction, mask_source
from payments.transitions import Actor


def shop(username: str = "shop") -> Any:
    return get_user_model().objects.get_or_create(username=username)[0]


def charge(source: str, *, client: Any = None, amount: int = 1999, currency: str = "USD") -> Transaction:
    """Charge through `charge_create`, as the API does; return the transaction however it ended."""
    request = services.ChargeRequest(amount=amount, currency=currency, source=source, description="Order")
    try:
        charged = services.charge_create(client=client or shop(), request=request, idempotency_key=None)
        return charged.transaction
    except PaymentError as error:
        assert error.transaction is not None
        return Transaction.objects.get(pk=error.transaction.pk)


def refund(txn: Transaction, amount: int) -> Refund:
    """Refund part of a succeeded charge through `refund_create`, as the API does."""
    return services.refund_create(
        charge_id=txn.pk,
        client=txn.client,
        request=services.RefundRequest(amount=amount, reason="requested_by_customer"),
        idempotency_key=None,
        by=Actor.CLIENT,
        requested_by="tests",
    ).refund


def make_due(*transactions: Transaction) -> None:
    Transaction.objects.filter(pk__in=[t.pk for t in transactions]).update(
        next_retry_at=timezone.now() - timedelta(seconds=1)
    )


def failed(source: str = "tok_visa", *, client: Any = None, **fields: Any) -> Transaction:
    """A failed, due transaction the provider has never seen (its first try never reached it)."""
    values = {
        "status": Transaction.Status.FAILED,
        "error_type": Transaction.ErrorType.PROVIDER_ERROR,
        "error_code": "connection_error",
        "attempts": 1,
        "next_retry_at": timezone.now() - timedelta(seconds=1),
        **fields,
    }
    return Transaction.objects.create(
        client=client or shop(),
        amount=1999,
        currency="USD",
        source=source,
        source_masked=mask_source(source),
        description="Order",
        request_fingerprint="-",
        **values,
    )


def stale_pending(source: str = "tok_visa", *, age: timedelta = timedelta(minutes=11)) -> Transaction:
    """A pending row whose process died before the provider saw it."""
    txn = failed(source, status=Transaction.Status.PENDING, error_type="", error_code="", attempts=0)
    started = timezone.now() - age
    Transaction.objects.filter(pk=txn.pk).update(
        updated_at=started, claimed_at=started, charge_started_at=started
    )
    return Transaction.objects.get(pk=txn.pk)


def unknown(
    source: str = "tok_visa", *, age: timedelta = timedelta(minutes=11), **fields: Any
) -> Transaction:
    """A transaction whose outcome is unknown, its last charge call begun `age` ago."""
    values = {
        "status": Transaction.Status.UNKNOWN,
        "error_type": Transaction.ErrorType.OUTCOME_UNKNOWN,
        "error_code": "provider_timeout",
        "next_retry_at": None,
        "charge_started_at": timezone.now() - age,
        **fields,
    }
    return failed(source, **values)
