from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments.models import Transaction
from tests.support.health import check, get_health, held_connections, raw_mysql, server_side_connections
from tests.support.service import pool_options, requires_pooled_mysql

pytestmark = requires_pooled_mysql

CHARGE = {"amount": 1999, "currency": "USD", "source": "tok_visa", "description": "Order 1"}
ACQUIRE_TIMEOUT_S = 1.0
# A correctness bound, not a benchmark: the 503 must come from the acquire timeout, not from a hang.
MARGIN_S = 4.0


def charge(api: APIClient, key: str) -> Any:
    return api.post("/api/v1/charges", CHARGE, format="json", HTTP_IDEMPOTENCY_KEY=key)


# This session's own counters (MariaDB's), read on the pooled connection itself: the server's
# global ones count other clients' statements too. COM_PING counts in Com_admin_commands, not Questions.
SESSION_COUNTERS = ("Questions", "Com_set_option", "Com_rollback", "Com_admin_commands")


def session_counters() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute("SHOW SESSION STATUS WHERE Variable_name IN (%s, %s, %s, %s)", list(SESSION_COUNTERS))
        counters = {name: int(value) for name, value in cursor.fetchall()}
    # The driver knows its server-side id without asking.
    counters["connection_id"] = connection.connection.driver_connection.thread_id()
    return counters


def sent_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What the connection was sent from one reading to the next, the second reading's SHOW included."""
    assert after["connection_id"] == before["connection_id"], "the pool handed out the same connection"
    return {name: after[name] - before[name] for name in SESSION_COUNTERS}


@contextlib.contextmanager
def probe_table() -> Iterator[str]:
    """An InnoDB table of the test database's own, for rows a transaction writes."""
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS pool_reset_probe")
        cursor.execute("CREATE TABLE pool_reset_probe (id INT PRIMARY KEY) ENGINE=InnoDB")
    try:
        yield "pool_reset_probe"
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE pool_reset_probe")


def timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_health_pool_statistics_match_connections_held_by_threads(
    transactional_db: None, client: Client
) -> None:
    database_name = connection.settings_dict["NAME"]
    with pool_options(POOL_SIZE=4, MAX_OVERFLOW=2, TIMEOUT=ACQUIRE_TIMEOUT_S), held_connections(3):
        _, body = get_health(client)
        on_server = server_side_connections(database_name)

    pool = check(body, "database:pool")
    assert pool["status"] == "pass"
    assert (pool["size"], pool["max_overflow"], pool["timeout_ms"]) == (4, 2, 1000)
    assert pool["checked_out"] == 3
    assert pool["overflow"] == 0
    assert pool["utilization"] == 0.5
    assert pool["checked_out"] + pool["checked_in"] == on_server, "every open connection is accounted for"
    assert pool["connections_opened_total"] == on_server
    assert pool["checkout_wait_p50_ms"] is not None and pool["checkout_wait_p99_ms"] is not None


def test_pool_in_use_at_eighty_percent_warns(transactional_db: None, client: Client) -> None:
    with pool_options(POOL_SIZE=4, MAX_OVERFLOW=1, TIMEOUT=ACQUIRE_TIMEOUT_S), held_connections(4):
        status, body = get_health(client)

    pool = check(body, "database:pool")
    assert status == 200 and body["status"] == "warn"
    assert (pool["status"], pool["checked_out"], pool["utilization"]) == ("warn", 4, 0.8)
    # /health/'s own SELECT 1 found the pool's four in use and opened the one overflow connection.
    assert (pool["overflow"], pool["checked_in"]) == (1, 1)


def test_exhausted_pool_answers_503_within_acquire_timeout_writes_nothing_and_recovers(
    api: APIClient, client: Client, fake_provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="health"),
        pool_options(POOL_SIZE=2, MAX_OVERFLOW=0, TIMEOUT=ACQUIRE_TIMEOUT_S),
    ):
        with held_connections(2):
            first, first_s = timed(lambda: charge(api, "busy-1"))
            second, _ = timed(lambda: charge(api, "busy-2"))
            (health_status, health), health_s = timed(lambda: get_health(client))
        after = charge(api, "busy-1")
        transactions = list(Transaction.objects.values_list("idempotency_key", "status"))

    for busy in (first, second):
        assert busy.status_code == 503
        assert busy["Retry-After"] == "1"
        error = busy.json()["error"]
        assert (error["type"], error["code"], error["retryable"]) == ("database_busy", "pool_exhausted", True)
        assert busy.json()["transaction"] is None
    assert ACQUIRE_TIMEOUT_S <= first_s < ACQUIRE_TIMEOUT_S + MARGIN_S

    assert health_status == 200
    assert health_s < ACQUIRE_TIMEOUT_S, "/health/ reports an exhausted pool instead of waiting on it"
    assert health["status"] == "warn"
    assert check(health, "database:connection")["status"] == "warn"
    assert "exhausted" in check(health, "database:connection")["output"]
    pool = check(health, "database:pool")
    assert (pool["checked_out"], pool["checked_in"], pool["utilization"]) == (2, 0, 1.0)
    assert pool["exhausted_total"] == 2
    assert pool["last_exhausted_at"]

    exhausted_logs = [r for r in caplog.records if getattr(r, "event", None) == "db.pool_exhausted"]
    assert len(exhausted_logs) == 1, "logged once per burst, not once per request"
    assert after.status_code == 201, "the pool recovers once connections are returned"
    assert transactions == [("busy-1", "succeeded")], "the refused charges wrote nothing"
    assert fake_provider.total_charges() == 1
    print("\n/health/ during exhaustion:\n" + json.dumps(health, indent=2))


def test_connection_killed_on_the_server_is_replaced_by_pre_ping(api: APIClient, client: Client) -> None:
    def connection_id() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            value = cursor.fetchone()[0]
        connection.close()  # back to the pool
        return value

    with pool_options(POOL_SIZE=1, MAX_OVERFLOW=0, TIMEOUT=ACQUIRE_TIMEOUT_S):
        killed = connection_id()
        with raw_mysql() as raw, raw.cursor() as cursor:
            cursor.execute(f"KILL {int(killed)}")
        response = charge(api, "after-kill")
        replacement = connection_id()
        _, body = get_health(client)

    assert response.status_code == 201
    assert replacement != killed
    assert check(body, "database:pool")["connections_invalidated_total"] >= 1


def test_checkout_and_checkin_in_autocommit_send_only_the_pre_ping(transactional_db: None) -> None:
    with pool_options(POOL_SIZE=1, MAX_OVERFLOW=0, TIMEOUT=ACQUIRE_TIMEOUT_S):
        before = session_counters()
        connection.close()  # back to the pool in autocommit, then out again
        after = session_counters()
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@SESSION.tx_isolation, @@SESSION.autocommit")
            isolation, autocommit = cursor.fetchone()
        connection.close()

    # No ROLLBACK on checkin, no SET on checkout (the isolation level came with the
    # connection, by init_command): one ping, and the second reading's own SHOW.
    assert sent_between(before, after) == {
        "Questions": 1,
        "Com_set_option": 0,
        "Com_rollback": 0,
        "Com_admin_commands": 1,
    }
    assert (isolation, autocommit) == ("READ-COMMITTED", 1), "Django's level, on every checkout"


def test_connection_returned_inside_a_transaction_is_rolled_back(transactional_db: None) -> None:
    with pool_options(POOL_SIZE=1, MAX_OVERFLOW=0, TIMEOUT=ACQUIRE_TIMEOUT_S), probe_table() as table:
        before = session_counters()
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f"INSERT INTO {table} (id) VALUES (1)")
            # Back to the pool with the insert uncommitted; Django counts on the database to roll
            # it back, which a pooled connection, still open, does not do by itself.
            connection.close()
        # The pool's only connection, again: had the insert survived, this commit would keep it.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} (id) VALUES (2)")
        after = session_counters()
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {table}")
            rows = [row[0] for row in cursor.fetchall()]
        connection.close()

    assert rows == [2], "the transaction returned to the pool was rolled back, not committed by the next user"
    assert sent_between(before, after)["Com_rollback"] == 1, (
        "one ROLLBACK: the checkin inside the transaction"
    )
