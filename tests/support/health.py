from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import MySQLdb
from django.conf import settings as django_settings
from django.db import connection, connections
from django.http import HttpResponse
from django.test import Client, override_settings

from core.db import reset_pool

OPERATOR_TOKEN = "operator-token-for-tests-0123456789"


def operator_get(client: Client, path: str) -> HttpResponse:
    """GET an operator endpoint (/health/, /metrics) as Prometheus would: with METRICS_TOKEN."""
    with override_settings(METRICS_TOKEN=OPERATOR_TOKEN):
        return client.get(path, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})


def get_health(client: Client) -> tuple[int, dict[str, Any]]:
    """/health/ with its detail (as an operator)."""
    response = operator_get(client, "/health/")
    return response.status_code, response.json()


def check(body: dict[str, Any], name: str) -> dict[str, Any]:
    return body["checks"][name][0]


def wait_for_health(
    client: Client, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 8.0
) -> dict[str, Any]:
    """Poll /health/ until the predicate holds; fail with the last body otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        _, body = get_health(client)
        if predicate(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/health/ never got there; last body: {body}")
        time.sleep(0.1)


@contextlib.contextmanager
def held_connections(count: int) -> Iterator[list[int]]:
    """`count` threads each check a connection out of the pool and hold it until the block ends.

    Yields the server-side connection ids (MariaDB's CONNECTION_ID()).
    """
    ready = threading.Barrier(count + 1, timeout=15)
    release = threading.Event()
    ids: list[int] = []

    def hold() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT CONNECTION_ID()")
                ids.append(cursor.fetchone()[0])
            ready.wait()
            release.wait(timeout=60)
        finally:
            connection.close()

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
        yield ids
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=15)


@contextlib.contextmanager
def raw_mysql() -> Iterator[Any]:
    """A MariaDB connection outside the pool and outside the test database (for KILL, PROCESSLIST)."""
    params = connections["default"].get_connection_params()
    params.pop("database", None)
    params.pop("db", None)
    raw = MySQLdb.connect(**params)
    try:
        yield raw
    finally:
        raw.close()


def server_side_connections(database_name: str) -> int:
    with raw_mysql() as raw, raw.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", [database_name])
        return cursor.fetchone()[0]


@contextlib.contextmanager
def unreachable_database() -> Iterator[None]:
    settings_dict = connections["default"].settings_dict
    saved = dict(settings_dict)
    if django_settings.DATABASE_IS_POOLED:
        settings_dict["PORT"] = "1"  # nothing listens there: connection refused
    else:
        settings_dict["NAME"] = "/nonexistent/directory/db.sqlite3"
    reset_pool()
    try:
        yield
    finally:
        settings_dict.clear()
        settings_dict.update(saved)
        reset_pool()
