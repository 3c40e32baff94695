"""manage.py run_worker: the batch loops, continuously, stopped cleanly by SIGTERM."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command

from fakeprovider import FakeProvider
from payments.models import Refund, Transaction
from tests.support.factories import charge, failed, unknown
from tests.support.service import TEST_API_KEY, database_url_for_subprocess

pytestmark = pytest.mark.django_db(transaction=True)

MANAGE_PY = Path(django_settings.BASE_DIR) / "manage.py"
Status = Transaction.Status


def test_one_pass_retries_due_payments_and_settles_unknown_charges_and_refunds(
    fake_provider: FakeProvider,
) -> None:
    due = failed()
    lost = unknown()  # the provider never saw it: after the window, not charged
    paid = charge("tok_visa")
    fake_provider.inject_many([{"kind": "drop_after", "on": "refund"}] * 4)
    from payments import services
    from payments.errors import PaymentError
    from payments.transitions import Actor

    with pytest.raises(PaymentError):
        services.refund_create(
            charge_id=paid.pk,
            client=paid.client,
            request=services.RefundRequest(reason="duplicate", amount=100),
            idempotency_key=None,
            by=Actor.CLIENT,
            requested_by="tests",
        )
    out = io.StringIO()

    call_command("run_worker", "--once", stdout=out)

    assert Transaction.objects.get(pk=due.pk).status == Status.SUCCEEDED
    assert Transaction.objects.get(pk=lost.pk).error_code == "not_charged"
    assert Refund.objects.get().status == Refund.Status.SUCCEEDED
    assert "retry_succeeded" in out.getvalue() and "reconcile_refunds_succeeded" in out.getvalue()


@pytest.mark.slow
def test_sigterm_stops_the_worker_after_the_row_in_hand_with_exit_0(fake_provider: FakeProvider) -> None:
    fake_provider.latency_ms = 400
    rows = [failed() for _ in range(6)]
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "PAYMENT_SERVICE_URL": fake_provider.url,
        "PAYMENT_API_KEY": TEST_API_KEY,
        "PAYMENT_TIMEOUT_MS": "3000",
        "LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [sys.executable, str(MANAGE_PY), "run_worker", "--idle", "1"],
        env=env,
        cwd=MANAGE_PY.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not Transaction.objects.filter(status=Status.PENDING).exists():
        assert time.monotonic() < deadline and worker.poll() is None, "the worker never claimed a row"
        time.sleep(0.02)
    worker.send_signal(signal.SIGTERM)
    stdout, stderr = worker.communicate(timeout=30)

    assert worker.returncode == 0, stderr
    assert "run_worker: stopped after" in stdout
    statuses = list(Transaction.objects.filter(pk__in=[t.pk for t in rows]).values_list("status", flat=True))
    assert Status.PENDING not in statuses, "no row is left claimed"
    assert statuses.count(Status.SUCCEEDED) >= 1 and statuses.count(Status.FAILED) >= 1
    assert fake_provider.total_charges() == statuses.count(Status.SUCCEEDED)
