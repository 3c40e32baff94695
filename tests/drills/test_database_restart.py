"""Drill: the database restarts while charges are being made.

The drill starts a MariaDB server of its own (its own data directory, socket and port), so
it never stops the machine's shared one; it runs the same on SQLite and MariaDB test setups.
During the outage requests fail with a retryable 503; afterwards reconcile_payments settles
what was left pending, each failed order is retried once with its Idempotency-Key, and every
order must be charged exactly once, as the provider's own record shows.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench.infra import Gunicorn, PrivateMariaDB, manage, query, reconcile
from bench.load import Connection, Request, run_load
from fakeprovider import FakeProvider
from tests.support.drills import requires_private_mariadb

pytestmark = [pytest.mark.slow, requires_private_mariadb]

DATABASE = "drill"
CONCURRENCY = 4
LOAD_S = 6.0
DOWN_AT_S = 1.5
DOWN_FOR_S = 0.5


def order(token: str, number: int) -> Request:
    key = f"order-{number}"
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json", "Idempotency-Key": key}
    body = b'{"amount": 1200, "currency": "USD", "source": "tok_visa", "description": "drill"}'
    return Request("POST", "/api/v1/charges", body, headers, tag=key)


def test_database_restart_mid_load_loses_no_charge_and_charges_none_twice(
    fake_provider: FakeProvider, service_env: dict[str, Any], tmp_path: Path
) -> None:
    fake_provider.latency_ms = 50
    with PrivateMariaDB() as mariadb:
        query(port=mariadb.port, database="mysql", sql=f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")
        env = {**service_env, "DATABASE_URL": mariadb.url(DATABASE)}
        manage("migrate", "--noinput", env=env)
        token = manage("create_api_client", "drill", env=env).stdout.strip()
        with Gunicorn(env=env, log_path=tmp_path / "gunicorn.log", workers=1) as server:

            def restart() -> None:
                time.sleep(DOWN_AT_S)
                mariadb.stop()
                time.sleep(DOWN_FOR_S)
                mariadb.start()

            restarter = threading.Thread(target=restart)
            restarter.start()
            orders = run_load(
                base_url=server.url,
                make_request=lambda number: order(token, number),
                concurrency=CONCURRENCY,
                max_requests=2000,
                max_duration_s=LOAD_S,
            )
            restarter.join()
            failed = [s for s in orders.samples if s.status != 201]
            time.sleep(1.1)  # older than the 1 s in-flight window
            reconcile(env=env, after_s=1)
            retry = Connection(server.url)
            retried = [retry.send(s.request)[0] for s in failed]
            retry.close()
        rows = query(
            port=mariadb.port,
            database=DATABASE,
            sql="SELECT idempotency_key, provider_idempotency_key, status FROM payments_transaction",
        )

    assert failed, "the outage was felt (otherwise the drill tested nothing)"
    # 503 when the database failed before the provider call; 504 outcome_unknown/settle_failed
    # when it failed after it (README, Guarantees): both are retryable with the same key.
    assert {s.status for s in failed} <= {503, 504}, "every failure is the API's retryable 503 or 504"
    assert all(s.json()["error"]["code"] == "settle_failed" for s in failed if s.status == 504)
    assert all(s.json()["error"]["retryable"] for s in failed)
    assert set(retried) == {201}
    orders_sent = {s.request.tag for s in orders.samples}
    assert sorted(key for key, _, _ in rows) == sorted(orders_sent), "one transaction per order"
    assert {status for _, _, status in rows} == {"succeeded"}
    assert all(fake_provider.charge_count(provider_key) == 1 for _, provider_key, _ in rows)
    assert fake_provider.total_charges() == len(orders_sent), "nothing lost, nothing charged twice"
