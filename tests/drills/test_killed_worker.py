"""Drill: a gunicorn worker is killed (SIGKILL) while a charge waits on the provider.

The charge was made by the provider but the worker died before recording it: the row is
left `pending`. reconcile_payments, run as cron would run it, must find it and settle it
as the provider recorded it, and a client retry must replay it without a second charge.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench.infra import Gunicorn, reconcile
from bench.load import Connection, Request
from fakeprovider import FakeProvider
from payments.models import Transaction
from tests.support.service import database_url_for_subprocess

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHARGE_BODY = b'{"amount": 2500, "currency": "EUR", "source": "tok_timeout", "description": "drill"}'


def wait_for(condition: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_charge_cut_off_by_a_killed_worker_is_settled_by_reconcile_payments_once(
    fake_provider: FakeProvider,
    api_user_token: tuple[Any, str],
    service_env: dict[str, Any],
    tmp_path: Path,
) -> None:
    # tok_timeout: the provider charges at once and holds its answer, so the charge stays in flight.
    fake_provider.timeout_window_s = 60
    env = {**service_env, "DATABASE_URL": database_url_for_subprocess(), "PAYMENT_TIMEOUT_MS": "30000"}
    request = Request(
        "POST",
        "/api/v1/charges",
        CHARGE_BODY,
        {
            "Authorization": f"Token {api_user_token[1]}",
            "Content-Type": "application/json",
            "Idempotency-Key": "order-killed-1",
        },
    )
    with Gunicorn(env=env, log_path=tmp_path / "gunicorn.log", workers=1) as server:
        statuses: list[int] = []
        sender = threading.Thread(target=lambda: statuses.append(Connection(server.url).send(request)[0]))
        sender.start()
        wait_for(lambda: Transaction.objects.filter(idempotency_key="order-killed-1").exists())
        txn = Transaction.objects.get(idempotency_key="order-killed-1")
        wait_for(lambda: fake_provider.charge_count(txn.provider_idempotency_key) == 1)

        killed = server.kill_workers()
        sender.join(timeout=30)
        wait_for(lambda: server.worker_pids() and not set(killed) & set(server.worker_pids()), timeout_s=30)
        server.wait_for_workers()
        txn.refresh_from_db()
        assert statuses == [0], "the client's connection was cut"
        assert txn.status == Transaction.Status.PENDING

        time.sleep(1.1)  # older than the 1 s in-flight window
        summary = reconcile(env=env, after_s=1)
        txn.refresh_from_db()
        replay_status, _ = Connection(server.url).send(request)

    assert summary["counts"] == {"succeeded": 1}
    assert txn.status == Transaction.Status.SUCCEEDED
    assert txn.provider_charge_id.startswith("ch_")
    assert replay_status == 201
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1
    assert fake_provider.total_charges() == 1, "the retry replayed the charge; nothing was charged twice"
