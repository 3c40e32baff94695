"""What reconcile_payments looks up, and when: by the database's clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from payments import selectors
from payments.models import Transaction
from tests.support.factories import unknown

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
