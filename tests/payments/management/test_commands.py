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
from django.core.management import CommandError, call_command, load_command_class
from django.utils import timezone

from fakeprovider import FakeProvider
from payments import failpoints, provider
from payments.models import Transaction
from tests.support.factories import charge, failed, make_due, stale_pending, unknown
from tests.support.service import TEST_API_KEY, database_url_for_subprocess

pytestmark = pytest.mark.django_db(transaction=True)

Status = Transaction.Status
MANAGE_PY = Path(django_settings.BASE_DIR) / "manage.py"


def run(command: str, *args: str, exit_code: int = 0) -> dict[str, Any]:
    """Run a command in-process with --json; check its exit code and return its summary."""
    stdout = io.StringIO()
    try:
        call_command(command, *args, "--json", stdout=stdout, stderr=io.StringIO())
    except CommandError as error:
        assert error.returncode == exit_code, (error, stdout.getvalue())
    else:
        assert exit_code == 0, stdout.getvalue()
    return json.loads(stdout.getvalue())  # exactly one JSON document


def run_while_provider_is_down(fake_provider: FakeProvider, command: str) -> dict[str, Any]:
    """Run a command while nothing listens on the provider's port; it must exit 1."""
    fake_provider.stop()
    try:
        return run(command, exit_code=1)
    finally:
        fake_provider.start()


def snapshot() -> list[tuple[Any, ...]]:
    return list(
        Transaction.objects.order_by("pk").values_list(
            "pk", "status", "error_type", "error_code", "attempts", "next_retry_at", "updated_at"
        )
    )


def settle_breaks() -> None:
    """Armed at the "settle" failpoint: a bug while recording an answer."""
    raise RuntimeError("simulated bug while recording an answer")


def age(txn: Transaction, seconds: float) -> Transaction:
    """Move the row's last charge call `seconds` into the past."""
    started = timezone.now() - timedelta(seconds=seconds)
    Transaction.objects.filter(pk=txn.pk).update(charge_started_at=started, updated_at=started)
    return Transaction.objects.get(pk=txn.pk)


def in_flight_window_passed(settings: Any) -> timedelta:
    """An age past PAYMENT_RECONCILE_AFTER_S: no attempt begun then can still be in flight."""
    return timedelta(seconds=settings.PAYMENT_RECONCILE_AFTER_S + 1)


def test_flaky_failure_is_retried_by_the_command_until_it_succeeds_with_one_charge(
    fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0  # so each try is one HTTP attempt; tok_flaky answers 503 twice
    txn = charge("tok_flaky")
    assert (txn.status, txn.error_type, txn.error_code) == (Status.FAILED, "provider_error", "provider_error")

    make_due(txn)
    still_failing = run("retry_failed_payments", exit_code=1)
    make_due(txn)
    recovered = run("retry_failed_payments")

    assert still_failing["counts"] == {"failed": 1}
    assert still_failing["errors"] == [f"{txn.pk}: failed: HTTP 503"]
    assert recovered["counts"] == {"succeeded": 1} and recovered["errors"] == []
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
    assert {(t.status, t.error_code) for t in down} == {(Status.FAILED, "connection_error")}
    make_due(*down)

    summary = run("retry_failed_payments")

    assert summary["counts"] == {"succeeded": 2}
    assert all(fake_provider.charge_count(t.provider_idempotency_key) == 1 for t in down)
    assert fake_provider.total_charges() == 2


def test_retry_command_exits_1_listing_each_row_when_every_connection_is_refused(
    fake_provider: FakeProvider,
) -> None:
    rows = [failed(), failed()]

    summary = run_while_provider_is_down(fake_provider, "retry_failed_payments")

    assert summary["counts"] == {"failed": 2}
    refused = "failed: could not open a connection to the provider; nothing was sent"
    assert sorted(summary["errors"]) == sorted(f"{t.pk}: {refused}" for t in rows)
    for txn in Transaction.objects.filter(pk__in=[t.pk for t in rows]):
        assert (txn.status, txn.error_code) == (Status.FAILED, "connection_error"), "known not charged"
        assert txn.next_retry_at > timezone.now() and not txn.needs_review
    assert fake_provider.total_charges() == 0


@pytest.mark.parametrize("command", ["retry_failed_payments", "reconcile_payments"])
def test_command_exits_1_claiming_nothing_while_the_breaker_is_open(
    fake_provider: FakeProvider, settings: Any, command: str
) -> None:
    settings.PAYMENT_BREAKER_FAILURES = 1
    settings.PAYMENT_BREAKER_RESET_S = 60
    rows = [failed(), unknown()]
    provider.get_client().breaker.record_failure()
    before = snapshot()

    summary = run(command, exit_code=1)

    assert summary["total"] == 0
    assert len(summary["errors"]) == 1 and "circuit open" in summary["errors"][0]
    assert snapshot() == before
    assert all(fake_provider.request_count(t.provider_idempotency_key) == 0 for t in rows)


def test_retry_command_leaves_rows_that_are_not_due_alone(fake_provider: FakeProvider) -> None:
    later = failed(next_retry_at=timezone.now() + timedelta(minutes=5))
    maybe_charged = unknown()

    summary = run("retry_failed_payments")

    assert summary["total"] == 0
    assert fake_provider.request_count(later.provider_idempotency_key) == 0
    assert fake_provider.request_count(maybe_charged.provider_idempotency_key) == 0


def test_max_attempts_reached_needs_review_at_once_and_is_not_retried_again(
    fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    settings.PAYMENT_MAX_ATTEMPTS = 2
    txn = charge("tok_error")
    make_due(txn)

    last_try = run("retry_failed_payments", exit_code=1)
    make_due(txn)  # even when due, a row at the attempt limit is left for a person
    afterwards = run("retry_failed_payments")

    assert last_try["counts"] == {"failed": 1}
    txn = Transaction.objects.get(pk=txn.pk)
    assert (txn.attempts, txn.status) == (2, Status.FAILED)
    assert txn.needs_review and txn.review_reason, "flagged by the last try itself"
    assert afterwards["total"] == 0
    assert fake_provider.request_count(txn.provider_idempotency_key) == 2


def test_lowering_max_attempts_flags_rows_at_the_new_limit_for_review_and_never_sends_them(
    fake_provider: FakeProvider, settings: Any
) -> None:
    tried_three_times = failed(attempts=3)
    tried_twice_not_due = failed(attempts=2, next_retry_at=timezone.now() + timedelta(minutes=5))
    tried_once = failed(attempts=1)
    settings.PAYMENT_MAX_ATTEMPTS = 2

    summary = run("retry_failed_payments")

    assert [row["id"] for row in summary["transactions"]] == [str(tried_once.pk)]
    for txn in (tried_three_times, tried_twice_not_due):
        txn = Transaction.objects.get(pk=txn.pk)
        assert txn.status == Status.FAILED and txn.next_retry_at is None, "never due again"
        assert txn.needs_review and "limit 2" in txn.review_reason
        assert fake_provider.request_count(txn.provider_idempotency_key) == 0
    assert run("retry_failed_payments", "--dry-run")["total"] == 0


def test_reconcile_command_settles_a_timed_out_charge_once_no_attempt_can_be_in_flight(
    fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    fake_provider.inject({"kind": "hold", "ms": 600})  # charged; the answer comes after the read timeout
    txn = charge("tok_visa")
    assert (txn.status, txn.error_type, txn.error_code) == (
        Status.UNKNOWN,
        "outcome_unknown",
        "provider_timeout",
    )

    too_early = run("reconcile_payments")
    age(txn, in_flight_window_passed(settings).total_seconds())
    summary = run("reconcile_payments")

    assert too_early["total"] == 0, "the attempt may still be in flight: not looked up yet"
    assert summary["counts"] == {"succeeded": 1}
    txn = Transaction.objects.get(pk=txn.pk)
    assert txn.status == Status.SUCCEEDED and txn.provider_charge_id
    assert fake_provider.request_count(txn.provider_idempotency_key) == 1, "one POST, then one lookup"
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1


def test_reconcile_command_leaves_a_young_pending_row_alone_and_makes_an_old_one_retryable(
    fake_provider: FakeProvider, settings: Any
) -> None:
    died = stale_pending(age=in_flight_window_passed(settings))
    recent = stale_pending(age=timedelta(seconds=0))  # its provider call may be running now

    summary = run("reconcile_payments")

    assert [(row["id"], row["outcome"]) for row in summary["transactions"]] == [(str(died.pk), "not_charged")]
    died = Transaction.objects.get(pk=died.pk)
    assert (died.status, died.error_type, died.error_code) == (Status.FAILED, "provider_error", "not_charged")
    assert died.next_retry_at <= timezone.now()
    assert Transaction.objects.get(pk=recent.pk).status == Status.PENDING
    assert fake_provider.request_count(recent.provider_idempotency_key) == 0
    assert run("retry_failed_payments")["counts"] == {"succeeded": 1}
    assert fake_provider.charge_count(died.provider_idempotency_key) == 1


def test_reconcile_command_exits_1_and_charges_nothing_while_provider_is_down(
    fake_provider: FakeProvider,
) -> None:
    maybe_charged = unknown()
    died = stale_pending()
    before = snapshot()

    summary = run_while_provider_is_down(fake_provider, "reconcile_payments")

    assert summary["counts"] == {"unavailable": 2}
    assert len(summary["errors"]) == 2
    assert {line.split(":")[0] for line in summary["errors"]} == {str(maybe_charged.pk), str(died.pk)}
    assert [row for row in snapshot() if row[0] == maybe_charged.pk] == [
        row for row in before if row[0] == maybe_charged.pk
    ], "left exactly as it was"
    died = Transaction.objects.get(pk=died.pk)
    assert (died.status, died.error_type, died.error_code) == (
        Status.UNKNOWN,
        "outcome_unknown",
        "interrupted",
    ), "abandoned mid-call: unknown until a lookup answers, never pending or failed"
    assert fake_provider.total_charges() == 0
    assert run("reconcile_payments")["counts"] == {"not_charged": 2}, "settled once the provider is back"


def test_one_row_with_an_unusable_lookup_answer_is_flagged_and_the_batch_goes_on(
    fake_provider: FakeProvider,
) -> None:
    bad, good = age(unknown(), 20), age(unknown(), 10)  # oldest first
    fake_provider.inject({"kind": "garbage", "variant": "long_id", "on": "lookup"})

    summary = run("reconcile_payments", exit_code=1)

    assert [(row["id"], row["outcome"]) for row in summary["transactions"]] == [
        (str(bad.pk), "unavailable"),
        (str(good.pk), "not_charged"),
    ]
    assert [line.split(":")[0] for line in summary["errors"]] == [str(bad.pk)]
    bad = Transaction.objects.get(pk=bad.pk)
    assert bad.status == Status.UNKNOWN and bad.needs_review, "never guessed from an unusable answer"
    assert len(bad.provider_charge_id) <= 64
    assert Transaction.objects.get(pk=good.pk).status == Status.FAILED
    again = run("reconcile_payments")  # a lookup never charges: asking again is safe
    assert [(row["id"], row["outcome"]) for row in again["transactions"]] == [(str(bad.pk), "not_charged")]
    bad = Transaction.objects.get(pk=bad.pk)
    assert bad.status == Status.FAILED and not bad.needs_review, "settled by a usable answer"


def test_one_row_that_raises_is_flagged_for_review_and_the_batch_goes_on(
    fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    rows = []
    for _ in range(2):
        fake_provider.inject({"kind": "drop_after"})  # charged; the answer is lost
        rows.append(charge("tok_visa"))
    assert {t.status for t in rows} == {Status.UNKNOWN}
    first, second = (age(t, seconds) for t, seconds in zip(rows, (20, 10), strict=True))

    with failpoints.armed("settle", failpoints.once(settle_breaks)):
        summary = run("reconcile_payments", exit_code=1)

    assert [(row["id"], row["outcome"]) for row in summary["transactions"]] == [
        (str(first.pk), "error"),
        (str(second.pk), "succeeded"),
    ]
    assert [line.split(":")[0] for line in summary["errors"]] == [str(first.pk)]
    assert "RuntimeError" in summary["errors"][0]
    first = Transaction.objects.get(pk=first.pk)
    assert first.status == Status.UNKNOWN and first.needs_review, "put back as it was, for a person"
    assert Transaction.objects.get(pk=second.pk).status == Status.SUCCEEDED


def test_an_error_after_a_retry_charge_was_sent_leaves_the_row_unknown_not_failed(
    fake_provider: FakeProvider,
) -> None:
    txn = failed()

    with failpoints.armed("settle", failpoints.once(settle_breaks)):
        summary = run("retry_failed_payments", exit_code=1)

    assert summary["counts"] == {"error": 1}
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1, "the provider charged it"
    txn = Transaction.objects.get(pk=txn.pk)
    assert txn.needs_review
    assert txn.status == Status.UNKNOWN, "a failed row says 'known not charged' and may be canceled"


@pytest.mark.parametrize(
    ("command", "candidates"),
    [("retry_failed_payments", {"failed": 1}), ("reconcile_payments", {"pending": 1, "unknown": 1})],
)
def test_dry_run_lists_candidates_and_changes_nothing(
    fake_provider: FakeProvider, command: str, candidates: dict[str, int]
) -> None:
    rows = {"unknown": unknown(), "failed": failed(), "pending": stale_pending()}
    before = snapshot()
    stdout = io.StringIO()

    call_command(command, "--dry-run", stdout=stdout)
    summary = run(command, "--dry-run")

    assert snapshot() == before
    assert all(fake_provider.request_count(t.provider_idempotency_key) == 0 for t in rows.values())
    assert "nothing was changed" in stdout.getvalue()
    assert summary["dry_run"] is True and summary["counts"] == candidates
    listed = {row["id"] for row in summary["transactions"]}
    assert listed == {str(rows[status].pk) for status in candidates}
    assert all(str(rows[status].pk) in stdout.getvalue() for status in candidates)


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


def test_an_id_that_is_no_transaction_exits_2_with_one_line_and_does_nothing(
    fake_provider: FakeProvider,
) -> None:
    txn = failed()
    before = snapshot()

    process = _start(
        "retry_failed_payments",
        "--id",
        "00000000-0000-4000-8000-000000000000",
        env=_command_env(fake_provider),
    )
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 2, stderr
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("CommandError: No transaction with id 00000000-"), stderr
    assert snapshot() == before
    assert fake_provider.request_count(txn.provider_idempotency_key) == 0


def test_progress_every_0_exits_2_before_charging_anything(fake_provider: FakeProvider) -> None:
    """It used to charge a row, then die on ZeroDivisionError (exit 1)."""
    txn = failed()
    before = snapshot()

    process = _start("retry_failed_payments", "--progress-every", "0", env=_command_env(fake_provider))
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 2, stderr
    assert stdout == ""
    *usage, error = stderr.strip().splitlines()
    assert usage[0].startswith("usage: manage.py retry_failed_payments"), stderr
    assert error == (
        "manage.py retry_failed_payments: error: argument --progress-every: expected an integer >= 1, got '0'"
    )
    assert snapshot() == before
    assert fake_provider.request_count(txn.provider_idempotency_key) == 0


@pytest.mark.parametrize("command", ["retry_failed_payments", "reconcile_payments"])
@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--limit", "0"], "argument --limit: expected an integer >= 1, got '0'"),
        (["--limit", "-5"], "argument --limit: expected an integer >= 1, got '-5'"),
        (["--limit", "ten"], "argument --limit: expected an integer >= 1, got 'ten'"),
        (["--progress-every", "0"], "argument --progress-every: expected an integer >= 1, got '0'"),
        (["--progress-every", "-1"], "argument --progress-every: expected an integer >= 1, got '-1'"),
        (["--progress-every", "2.5"], "argument --progress-every: expected an integer >= 1, got '2.5'"),
        (["--id", "not-a-uuid"], "argument --id: invalid UUID value: 'not-a-uuid'"),
    ],
)
def test_every_option_out_of_range_is_a_usage_error_before_any_work(
    fake_provider: FakeProvider, capsys: pytest.CaptureFixture[str], command: str, args: list[str], error: str
) -> None:
    rows = [failed(), unknown()]
    before = snapshot()

    with pytest.raises(SystemExit) as exited:  # as from the command line: argparse's own exit
        load_command_class("payments", command).run_from_argv(["manage.py", command, *args, "--json"])

    assert exited.value.code == 2
    *usage, line = capsys.readouterr().err.strip().splitlines()
    assert usage[0].startswith(f"usage: manage.py {command}")
    assert line == f"manage.py {command}: error: {error}"
    assert snapshot() == before
    assert all(fake_provider.request_count(txn.provider_idempotency_key) == 0 for txn in rows)


def test_json_summary_is_the_whole_stdout_and_log_lines_go_to_stderr(fake_provider: FakeProvider) -> None:
    rows = [failed(), failed("tok_error")]

    process = _start(
        "retry_failed_payments", "--json", env={**_command_env(fake_provider), "LOG_LEVEL": "INFO"}
    )
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 1, stderr
    summary = json.loads(stdout)  # exactly one document, nothing else
    assert summary["counts"] == {"failed": 1, "succeeded": 1}
    assert summary["errors"] == [f"{rows[1].pk}: failed: HTTP 500"]
    assert "payment.retried" in stderr and str(rows[0].pk) in stderr, "the log lines are on stderr"


@pytest.mark.slow
def test_a_second_ctrl_c_during_a_charge_leaves_the_row_unknown_never_pending(
    fake_provider: FakeProvider, settings: Any
) -> None:
    fake_provider.latency_ms = 2500  # each charge takes longer than the test needs to interrupt it
    rows = [failed() for _ in range(3)]
    process = _start("retry_failed_payments", "--json", env=_command_env(fake_provider))
    assert process.stderr is not None

    deadline = time.monotonic() + 30
    while not any(fake_provider.request_count(t.provider_idempotency_key) for t in rows):
        assert time.monotonic() < deadline and process.poll() is None, "the command never sent a charge"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    earlier = []  # with --json, log lines share stderr with the command's notice
    for line in iter(process.stderr.readline, ""):
        if "SIGINT: stopping after the transaction in hand" in line:
            break
        earlier.append(line)
    else:
        pytest.fail(f"no notice of the first SIGINT: {earlier}")
    process.send_signal(signal.SIGINT)  # still inside the provider call
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 128 + signal.SIGINT, stderr
    assert json.loads(stdout)["interrupted"] is True
    sent = [t for t in rows if fake_provider.request_count(t.provider_idempotency_key)]
    assert len(sent) == 1
    statuses = dict(Transaction.objects.filter(pk__in=[t.pk for t in rows]).values_list("pk", "status"))
    assert statuses[sent[0].pk] == Status.UNKNOWN, "the provider may have charged it"
    assert sorted(statuses.values()) == [Status.FAILED, Status.FAILED, Status.UNKNOWN]
    interrupted = Transaction.objects.get(pk=sent[0].pk)
    assert (interrupted.error_type, interrupted.error_code) == ("outcome_unknown", "interrupted")
    deadline = time.monotonic() + 10
    while not fake_provider.charge_count(sent[0].provider_idempotency_key):  # the provider goes on
        assert time.monotonic() < deadline, "the provider never completed the interrupted charge"
        time.sleep(0.05)
    age(interrupted, settings.PAYMENT_RECONCILE_AFTER_S + 1)  # rather than wait for the window
    assert run("reconcile_payments")["counts"] == {"succeeded": 1}, "reconcile finds the charge"
