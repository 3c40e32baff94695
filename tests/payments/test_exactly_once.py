"""Issue-18 regressions: the service never infers "not charged" from a guess it can make false.

Each test replays one path that, before fences, one clock and facts-first settlement, ended
with a payment the provider charged recorded as canceled or not charged.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from fakeprovider import FakeProvider
from payments import provider, services
from payments.models import Transaction
from payments.provider import Outcome, ProviderResult
from payments.services import settlement
from payments.services.claims import claim
from payments.services.settlement import Fenced
from payments.transitions import Actor
from tests.support.factories import charge, stale_pending, unknown
from tests.support.service import TEST_API_KEY, database_url_for_subprocess, requires_pooled_mysql

pytestmark = pytest.mark.django_db(transaction=True)
Status = Transaction.Status
ROOT = Path(__file__).resolve().parents[2]


def send(txn: Transaction) -> ProviderResult:
    return settlement.send_charge(txn, provider.get_client())


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if getattr(record, "event", "") == name]


def test_a_success_after_cancel_is_recorded_and_flagged(
    fake_provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    # A request's charge call is still running when the window passes (a trickling answer):
    in_flight = stale_pending()
    Transaction.objects.filter(pk=in_flight.pk).update(claim_token="request-a")
    request_a = Transaction.objects.get(pk=in_flight.pk)
    # reconcile finds no charge yet, the row becomes "not charged", and the client cancels it.
    assert services.charge_reconcile(transaction_id=in_flight.pk, actor="reconcile").outcome == "not_charged"
    services.charge_cancel(transaction_id=in_flight.pk, reason="customer left", actor="support")
    # Then the provider's success for the first call arrives.
    settled = settlement.settle(claimed=request_a, result=send(request_a), by=Actor.CLIENT)

    assert (settled.status, settled.review_reason) == (Status.SUCCEEDED, "charged after cancel")
    assert settled.provider_charge_id and fake_provider.total_charges() == 1
    [late] = events(caplog, "payment.charged_late")
    assert late.levelno == logging.ERROR
    assert list(services_attention()) == [settled.pk]


def services_attention() -> Any:
    from payments import selectors

    return selectors.attention_charged_late().values_list("pk", flat=True)


def test_a_paused_reconcile_that_lost_its_claim_writes_nothing(
    fake_provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    txn = unknown()
    paused = claim(Transaction.objects.filter(pk=txn.pk), by=Actor.RECONCILE)
    assert paused is not None
    # The reconcile is frozen past the window; the client's same-key retry takes the row over.
    Transaction.objects.filter(pk=txn.pk).update(
        claimed_at=timezone.now() - timedelta(minutes=5), idempotency_key="order-1"
    )
    request = services.ChargeRequest(
        amount=txn.amount, currency=txn.currency, source=txn.source, description=""
    )
    Transaction.objects.filter(pk=txn.pk).update(request_fingerprint=request.fingerprint())
    taken_over = claim(Transaction.objects.filter(pk=txn.pk), by=Actor.CLIENT)
    assert taken_over is not None and taken_over.claim_token != paused.claim_token

    # The paused reconcile resumes with its stale "no such charge".
    not_found = ProviderResult(outcome=Outcome.NOT_FOUND, code="not_found")
    with pytest.raises(Fenced):
        settlement.settle_not_charged(paused, not_found)
    with pytest.raises(Fenced):
        settlement.settle(claimed=paused, result=ProviderResult(outcome=Outcome.UNKNOWN), by=Actor.RECONCILE)

    row = Transaction.objects.get(pk=txn.pk)
    assert (row.status, row.claim_token) == (Status.PENDING, taken_over.claim_token)
    assert row.attempt_log.count() == 0, "a fenced claim writes nothing"
    assert len(events(caplog, "payment.claim_fenced")) == 2
    # The owner's answer settles it; the paused one's success would still be recorded (a fact).
    assert (
        settlement.settle(claimed=taken_over, result=send(taken_over), by=Actor.CLIENT).status
        == Status.SUCCEEDED
    )


def test_a_lookup_before_the_window_by_the_database_clock_concludes_nothing(
    fake_provider: FakeProvider,
) -> None:
    txn = unknown(age=timedelta(minutes=11))
    claimed = claim(Transaction.objects.filter(pk=txn.pk), by=Actor.RECONCILE)
    # Another request sent it again a moment ago: the locked row's charge_started_at is fresh,
    # though the reconcile's own copy says 11 minutes.
    Transaction.objects.filter(pk=txn.pk).update(charge_started_at=timezone.now())

    result = settlement.settle_not_charged(claimed, ProviderResult(outcome=Outcome.NOT_FOUND))

    assert result is None
    assert Transaction.objects.get(pk=txn.pk).status == Status.PENDING


def test_an_answer_for_another_charge_is_unknown_and_flagged(caplog: pytest.LogCaptureFixture) -> None:
    txn = stale_pending()
    claimed = claim(Transaction.objects.filter(pk=txn.pk), by=Actor.RECONCILE)
    answer = ProviderResult(
        outcome=Outcome.SUCCEEDED, charge_id="ch_other", mismatch="amount 1 JPY, asked 1999 USD"
    )

    settled = settlement.settle(claimed=claimed, result=answer, by=Actor.RECONCILE, kind="lookup")

    assert (settled.status, settled.error_code) == (Status.UNKNOWN, "answer_mismatch")
    assert settled.needs_review and "amount 1 JPY" in settled.review_reason
    assert settled.provider_charge_id == "", "never recorded as this payment's charge"
    assert events(caplog, "payment.answer_mismatch")[0].levelno == logging.ERROR


@requires_pooled_mysql
@pytest.mark.skipif(
    not shutil.which("faketime"), reason="needs Debian's faketime (scripts/bootstrap.sh --dev)"
)
def test_a_reconcile_host_whose_clock_runs_ahead_leaves_a_charge_in_flight_alone(
    fake_provider: FakeProvider,
) -> None:
    txn = charge("tok_visa")
    # In flight for a second, by the database's clock.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE payments_transaction SET status='pending',"
            " claimed_at=UTC_TIMESTAMP(6) - INTERVAL 1 SECOND,"
            " charge_started_at=UTC_TIMESTAMP(6) - INTERVAL 1 SECOND WHERE id=%s",
            [txn.pk.hex],
        )
    env = {
        **os.environ,
        "DJANGO_READ_ENV_FILE": "false",
        "DATABASE_URL": database_url_for_subprocess(),
        "DJANGO_DEBUG": "true",
        "PAYMENT_SERVICE_URL": fake_provider.url,
        "PAYMENT_API_KEY": TEST_API_KEY,
        "PAYMENT_RECONCILE_AFTER_S": "6",
        "PAYMENT_DEADLINE_MS": "4000",
        "PAYMENT_CONNECT_TIMEOUT_MS": "300",
        "PAYMENT_TIMEOUT_MS": "300",
    }
    # The reconcile host's clock is 10 s ahead of the database's.
    ahead = subprocess.run(
        ["faketime", "-f", "+10s", sys.executable, "-c", "import time; print(time.time())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(ahead.stdout) > timezone.now().timestamp() + 9, "faketime did not move the clock"
    result = subprocess.run(
        ["faketime", "-f", "+10s", sys.executable, "manage.py", "reconcile_payments", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert Transaction.objects.get(pk=txn.pk).status == Status.PENDING, result.stdout


@pytest.mark.parametrize("variant", ["amount", "currency", "key"])
def test_a_charge_answered_for_another_charge_is_not_a_success(
    fake_provider: FakeProvider, variant: str
) -> None:
    fake_provider.inject({"kind": "other_charge", "variant": variant})

    txn = charge("tok_visa")

    assert (txn.status, txn.error_code) == (Status.UNKNOWN, "answer_mismatch"), variant
    assert txn.needs_review and txn.provider_charge_id == ""
    # The provider did charge our key: reconcile finds that charge, ours, and records it.
    Transaction.objects.filter(pk=txn.pk).update(charge_started_at=timezone.now() - timedelta(minutes=11))
    assert services.charge_reconcile(transaction_id=txn.pk, actor="reconcile").outcome == "succeeded"
    assert fake_provider.total_charges() == 1
