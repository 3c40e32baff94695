"""What reconcile_payments looks up and when (by the database's clock); one charge as the API shows it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from payments import selectors
from payments.models import PaymentAttempt, Refund, Transaction
from tests.support.factories import charge, refund, shop, unknown

pytestmark = pytest.mark.django_db(transaction=True)

# In the tests the slowest charge is 4000 + 300 + 300 ms, the window PAYMENT_RECONCILE_AFTER_S = 5 s.


def at(*, started_s: float, claimed_s: float) -> Transaction:
    """An unknown charge whose last call began `started_s` ago and whose last claim was `claimed_s` ago."""
    row = unknown()
    now = timezone.now()
    Transaction.objects.filter(pk=row.pk).update(
        charge_started_at=now - timedelta(seconds=started_s), claimed_at=now - timedelta(seconds=claimed_s)
    )
    return row


def due() -> set[object]:
    return set(selectors.to_reconcile().values_list("pk", flat=True))


def test_an_unknown_charge_is_looked_up_once_its_slowest_attempt_is_over_then_less_and_less_often(
    settings: object,
) -> None:
    settings.PAYMENT_RECONCILE_AFTER_S = 3600  # the window far away: only the schedule decides
    just_sent = at(started_s=2, claimed_s=2)
    slowest_over = at(started_s=6, claimed_s=6)
    looked_up_at_10s_then_1s_ago = at(started_s=11, claimed_s=1)
    looked_up_at_10s_then_10s_ago = at(started_s=20, claimed_s=10)

    assert due() == {slowest_over.pk, looked_up_at_10s_then_10s_ago.pk}
    assert just_sent.pk not in due() and looked_up_at_10s_then_1s_ago.pk not in due()


def test_past_the_window_every_unknown_charge_is_due_whatever_its_last_lookup(settings: object) -> None:
    settings.PAYMENT_RECONCILE_AFTER_S = 5
    looked_up_a_moment_ago = at(started_s=60, claimed_s=1)

    assert due() == {looked_up_a_moment_ago.pk}
    assert set(selectors.attention_to_reconcile().values_list("pk", flat=True)) == {looked_up_a_moment_ago.pk}


def test_the_attention_view_waits_for_the_window(settings: object) -> None:
    settings.PAYMENT_RECONCILE_AFTER_S = 3600
    at(started_s=6, claimed_s=6)

    assert due() and not selectors.attention_to_reconcile().exists()


def fields(row: Any) -> dict[str, Any]:
    return {field.attname: getattr(row, field.attname) for field in type(row)._meta.concrete_fields}


def test_a_charge_shown_is_the_orms_row_with_its_attempts_and_refunds_in_order_and_no_more_queries() -> None:
    txn = charge("tok_visa", amount=5000)
    first, second = refund(txn, 1000), refund(txn, 700)
    txn = Transaction.objects.get(pk=txn.pk)
    txn.metadata = {"order": "A-1", "nested": {"n": 1}}
    txn.save()
    client = txn.client
    with CaptureQueriesContext(connection) as queries:
        shown = selectors.charge_shown(client=client, transaction_id=txn.pk)
        assert shown is not None
        attempts, refunds = list(shown.attempt_log.all()), list(shown.refunds.all())
    assert len(queries) == 3
    assert fields(shown) == fields(Transaction.objects.get(pk=txn.pk))
    orm_attempts = PaymentAttempt.objects.filter(transaction=txn).order_by("number")
    assert [fields(row) for row in attempts] == [fields(row) for row in orm_attempts]
    assert [row.number for row in attempts] == [1, 2, 3]  # the charge's, then each refund's
    assert [row.pk for row in refunds] == [second.pk, first.pk]  # newest first, as Meta orders them
    assert [fields(row) for row in refunds] == [fields(Refund.objects.get(pk=row.pk)) for row in refunds]


def test_a_charge_is_shown_only_to_its_client() -> None:
    txn = charge("tok_visa")
    assert selectors.charge_shown(client=shop("another"), transaction_id=txn.pk) is None
    assert selectors.charge_shown(client=txn.client, transaction_id=uuid.uuid4()) is None
