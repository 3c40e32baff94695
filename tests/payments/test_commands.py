from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from payments.fake_provider import FakeProvider
from payments.models import Transaction
from tests.conftest import TEST_API_KEY, database_url_for_subprocess
from tests.payments.factories import charge, failed, make_due, stale_pending

pytestmark = pytest.mark.django_db(transaction=True)

Status = Transaction.Status
MANAGE_PY = Path(django_settings.BASE_DIR) / "manage.py"


def run(command: str, *args: str) -> dict[str, Any]:
    """Run a command in-process with --json and return its summary."""
    stdout = io.StringIO()
    call_command(command, *args, "--json", stdout=stdout, stderr=io.StringIO())
    return json.loads(stdout.getvalue().strip().splitlines()[-1])


def snapshot() -> list[tuple[Any, ...]]:
    return list(
        Transaction.objects.order_by("pk").values_list(
            "pk", "status", "error_type", "error_code", "attempts", "next_retry_at", "updated_at"
        )
    )


def test_flaky_failure_is_retried_by_the_command_until_it_succeeds_with_one_charge(
    fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0  # so each try is one HTTP attempt; tok_flaky answers 503 twice
    txn = charge("tok_flaky")
    assert (txn.status, txn.error_type) == (Status.FAILED, "provider_error")

    make_due(txn)
    still_failing = run("retry_failed_payments")
    make_due(txn)
    recovered = run("retry_failed_payments")

    assert still_failing["counts"] == {"failed": 1}
    assert recovered["counts"] == {"succeeded": 1}
    assert recovered["transactions"][0]["id"] == str(txn.pk)
    txn = Transaction.objects.get(pk=txn.pk)
    assert (txn.status, txn.attempts) == (Status.SUCCEEDED, 3)
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1


def test_command_retries_failures_from_a_provider_outage_once_it_is_back(
    fake_provider: FakeProvider,
) -> None:
    fake_provider.stop()
    try:
        down = [charge("tok_visa"), charge("tok_visa")]
    finally:
        fake_provider.start()
    make_due(*down)

    summary = run("retry_failed_payments")

    assert summary["counts"] == {"succeeded": 2}
    assert all(fake_provider.charge_count(t.provider_idempotency_key) == 1 for t in down)
    assert fake_provider.total_charges() == 2


def test_retry_command_leaves_rows_that_are_not_due_alone(fake_provider: FakeProvider) -> None:
    later = failed(next_retry_at=timezone.now() + timedelta(minutes=5))

    summary = run("retry_failed_payments")

    assert summary["total"] == 0
    assert fake_provider.request_count(later.provider_idempotency_key) == 0


def test_max_attempts_reached_needs_review_and_is_not_retried_again(
    fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    settings.PAYMENT_MAX_ATTEMPTS = 2
    txn = charge("tok_error")
    make_due(txn)

    last_try = run("retry_failed_payments")
    make_due(txn)  # even when due, a row at the attempt limit is left for a person
    afterwards = run("retry_failed_payments")

    assert last_try["counts"] == {"failed": 1}
    txn = Transaction.objects.get(pk=txn.pk)
    assert (txn.attempts, txn.status) == (2, Status.FAILED)
    assert afterwards["total"] == 0
    assert fake_provider.request_count(txn.provider_idempotency_key) == 2
    Transaction.objects.filter(pk=txn.pk).update(next_retry_at=None)
    assert Transaction.objects.get(pk=txn.pk).needs_review


def test_max_attempts_option_leaves_rows_with_that_many_attempts_alone(fake_provider: FakeProvider) -> None:
    tried_twice = failed(attempts=2)
    tried_once = failed(attempts=1)

    summary = run("retry_failed_payments", "--max-attempts", "2")

    assert [row["id"] for row in summary["transactions"]] == [str(tried_once.pk)]
    assert fake_provider.request_count(tried_twice.provider_idempotency_key) == 0


def test_reconcile_command_marks_timed_out_charge_succeeded_without_a_second_charge(
    fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    txn = charge("tok_timeout")
    assert txn.error_type == "provider_timeout"

    summary = run("reconcile_payments")

    assert summary["counts"] == {"succeeded": 1}
    txn = Transaction.objects.get(pk=txn.pk)
    assert txn.status == Status.SUCCEEDED
    assert fake_provider.request_count(txn.provider_idempotency_key) == 1, "one POST, then one lookup"
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1


def test_reconcile_command_makes_stale_pending_row_unknown_to_provider_failed_and_retryable(
    fake_provider: FakeProvider,
) -> None:
    died = stale_pending(age=timedelta(minutes=11))
    recent = stale_pending(age=timedelta(minutes=1))

    summary = run("reconcile_payments", "--stale-after", "10m")

    assert [(row["id"], row["outcome"]) for row in summary["transactions"]] == [(str(died.pk), "not_charged")]
    died = Transaction.objects.get(pk=died.pk)
    assert died.status == Status.FAILED and died.next_retry_at <= timezone.now()
    assert Transaction.objects.get(pk=recent.pk).status == Status.PENDING
    assert run("retry_failed_payments")["counts"] == {"succeeded": 1}
    assert fake_provider.charge_count(died.provider_idempotency_key) == 1


def test_reconcile_command_exits_non_zero_and_changes_nothing_while_provider_is_down(
    fake_provider: FakeProvider,
) -> None:
    failed(error_type="provider_timeout", error_code="provider_timeout")
    stale_pending()
    before = snapshot()
    stdout = io.StringIO()

    fake_provider.stop()
    try:
        with pytest.raises(CommandError) as raised:
            call_command("reconcile_payments", "--json", stdout=stdout, stderr=io.StringIO())
    finally:
        fake_provider.start()

    assert raised.value.returncode == 1
    assert json.loads(stdout.getvalue().splitlines()[-1])["counts"] == {"unavailable": 2}
    assert snapshot() == before


@pytest.mark.parametrize("command", ["retry_failed_payments", "reconcile_payments"])
def test_dry_run_lists_candidates_and_changes_nothing(fake_provider: FakeProvider, command: str) -> None:
    rows = [failed(error_type="provider_timeout", error_code="provider_timeout"), failed()]
    before = snapshot()
    stdout = io.StringIO()

    call_command(command, "--dry-run", stdout=stdout)

    assert snapshot() == before
    assert all(fake_provider.request_count(t.provider_idempotency_key) == 0 for t in rows)
    assert "nothing was changed" in stdout.getvalue()
    assert str(rows[0].pk) in stdout.getvalue()


def test_summary_table_and_progress_per_row_at_verbosity_2(fake_provider: FakeProvider) -> None:
    rows = [failed(), failed()]
    stdout, stderr = io.StringIO(), io.StringIO()

    call_command("retry_failed_payments", verbosity=2, stdout=stdout, stderr=stderr)

    assert "retry_failed_payments: 2 transaction(s)" in stdout.getvalue()
    assert "succeeded      2" in stdout.getvalue()
    progress = stderr.getvalue().splitlines()
    assert [line.split()[1] for line in progress] == [str(t.pk) for t in rows]


def _command_env(fake_provider: FakeProvider) -> dict[str, str]:
    """The subprocess works on this test's database and provider."""
    return {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "PAYMENT_SERVICE_URL": fake_provider.url,
        "PAYMENT_API_KEY": TEST_API_KEY,
        "PAYMENT_TIMEOUT_MS": "3000",
        "PAYMENT_BACKOFF_MS": "10",
        "LOG_LEVEL": "WARNING",
    }


def _start(command: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(MANAGE_PY), command, *args],
        env=env,
        cwd=MANAGE_PY.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_two_retry_processes_started_together_retry_each_of_50_transactions_once(
    fake_provider: FakeProvider,
) -> None:
    fake_provider.latency_ms = 20
    rows = [failed() for _ in range(50)]
    env = _command_env(fake_provider)

    processes = [_start("retry_failed_payments", "--json", "--limit", "200", env=env) for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]

    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stdout + stderr
    summaries = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    worked = [row["id"] for summary in summaries for row in summary["transactions"]]
    assert sorted(worked) == sorted(str(t.pk) for t in rows), "each transaction worked by one process"
    assert all(fake_provider.request_count(t.provider_idempotency_key) == 1 for t in rows)
    assert fake_provider.total_charges() == 50
    assert set(Transaction.objects.values_list("status", "attempts")) == {(Status.SUCCEEDED, 2)}


@pytest.mark.slow
def test_ctrl_c_stops_after_the_transaction_in_hand_and_leaves_nothing_claimed(
    fake_provider: FakeProvider,
) -> None:
    fake_provider.latency_ms = 700
    rows = [failed() for _ in range(5)]
    process = _start("retry_failed_payments", "--json", env=_command_env(fake_provider))

    deadline = time.monotonic() + 30
    while not Transaction.objects.filter(status=Status.PENDING).exists():
        assert time.monotonic() < deadline and process.poll() is None, "the command never claimed a row"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 128 + signal.SIGINT, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["interrupted"] is True
    assert summary["counts"] == {"succeeded": 1}
    statuses = sorted(
        Transaction.objects.filter(pk__in=[t.pk for t in rows]).values_list("status", flat=True)
    )
    assert statuses == [Status.FAILED] * 4 + [Status.SUCCEEDED]
    assert fake_provider.total_charges() == 1
