from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client

from fakeprovider import FakeProvider
from health import report
from payments import provider
from tests.support.health import check, get_health, operator_get, unreachable_database, wait_for_health
from tests.support.service import TEST_API_KEY

CHECK_NAMES = {
    "database:connection",
    "database:pool",
    "payment-provider:circuit",
    "payment-provider:responseTime",
    "payment-provider:credentials",
}


def probed(body: dict[str, Any]) -> bool:
    return check(body, "payment-provider:responseTime")["observedValue"] is not None


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A server that accepts connections (in the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/health"


def test_live_answers_without_touching_the_database(client: Client) -> None:
    # No database fixture: pytest-django makes any database access raise here.
    response = client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "pass"}


def test_health_passes_in_health_json_never_cached_and_without_secrets(health_client: Client) -> None:
    body = wait_for_health(health_client, probed)
    response = operator_get(health_client, "/health/")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/health+json"
    assert "no-store" in response["Cache-Control"]
    assert body["status"] == "pass"
    assert set(body["checks"]) == CHECK_NAMES
    database = check(body, "database:connection")
    assert database["status"] == "pass"
    assert database["observedUnit"] == "ms" and database["observedValue"] >= 0
    assert check(body, "payment-provider:circuit")["observedValue"] == "closed"
    assert check(body, "payment-provider:credentials") == {"status": "pass", "componentType": "component"}
    response_time = check(body, "payment-provider:responseTime")
    assert response_time["status"] == "pass" and response_time["observedUnit"] == "ms"
    assert response_time["time"]
    text = response.content.decode()
    for secret in (TEST_API_KEY, "PASSWORD", "mysql://", "sqlite://"):
        assert secret not in text


def test_pool_check_says_not_pooled_on_sqlite(health_client: Client) -> None:
    if django_settings.DATABASE_IS_POOLED:
        pytest.skip("SQLite only")
    _, body = get_health(health_client)

    assert check(body, "database:pool") == {"status": "pass", "componentType": "datastore", "pooled": False}


def test_unreachable_database_fails_with_503(health_client: Client) -> None:
    with unreachable_database():
        status, body = get_health(health_client)

    assert status == 503
    assert body["status"] == "fail"
    database = check(body, "database:connection")
    assert database["status"] == "fail"
    assert database["output"].startswith("database unreachable (OperationalError")
    assert "nonexistent" not in database["output"] and "127.0.0.1" not in database["output"]


def test_health_answers_while_the_provider_hangs_then_reports_it(
    health_client: Client, settings: Any, hanging_url: str
) -> None:
    settings.PAYMENT_HEALTH_URL = hanging_url
    probe_timeout_s = 1.0  # min(2 s, PAYMENT_HEALTH_PROBE_S)

    started = time.monotonic()
    status, _ = get_health(health_client)
    elapsed_s = time.monotonic() - started
    body = wait_for_health(
        health_client, lambda b: check(b, "payment-provider:responseTime")["status"] == "fail"
    )

    assert status == 200
    assert elapsed_s < probe_timeout_s, "the request must not wait on the provider probe"
    response_time = check(body, "payment-provider:responseTime")
    assert response_time["output"] == "no answer within 1000 ms"
    assert response_time["observedValue"] is None
    assert body["status"] == "warn"


def test_probe_notices_provider_down_and_back_without_failing_health(
    health_client: Client, fake_provider: FakeProvider
) -> None:
    wait_for_health(health_client, probed)

    fake_provider.stop()
    try:
        started = time.monotonic()
        down = wait_for_health(
            health_client, lambda b: check(b, "payment-provider:responseTime")["status"] == "fail"
        )
        noticed_after_s = time.monotonic() - started
    finally:
        fake_provider.start()
    up = wait_for_health(health_client, lambda b: b["status"] == "pass")

    # Within one probe interval (1 s) plus its own timeout (1 s), with room for a busy machine.
    assert noticed_after_s < 4.0
    assert down["status"] == "warn", "a provider outage must not take the instance out of service"
    assert check(down, "payment-provider:responseTime")["output"].startswith("connection failed")
    assert check(up, "payment-provider:responseTime")["status"] == "pass"


def test_open_breaker_warns_and_status_change_is_logged_once(
    health_client: Client, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    wait_for_health(health_client, lambda b: b["status"] == "pass")
    settings.PAYMENT_BREAKER_FAILURES = 1
    breaker = provider.get_client().breaker
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="health"):
        breaker.record_failure()
        status, opened = get_health(health_client)
        get_health(health_client)
        breaker.reset()
        _, closed = get_health(health_client)

    assert status == 200 and opened["status"] == "warn"
    circuit = check(opened, "payment-provider:circuit")
    assert circuit["status"] == "fail" and circuit["observedValue"] == "open"
    assert circuit["retry_after_s"] >= 1
    assert closed["status"] == "pass"
    changes = [
        (r.fields["previous_status"], r.fields["status"], r.fields["checks_not_passing"])
        for r in caplog.records
        if getattr(r, "event", None) == "health.status_changed"
    ]
    assert changes == [
        ("pass", "warn", ["payment-provider:circuit"]),
        ("warn", "pass", []),
    ]


def test_first_status_of_a_process_is_logged_as_its_initial_state(
    health_client: Client, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "_last_status", None)  # as in a process that just started

    with caplog.at_level(logging.INFO, logger="health"):
        get_health(health_client)
        get_health(health_client)

    [first] = [r for r in caplog.records if getattr(r, "event", None) == "health.status_changed"]
    assert first.getMessage() == f"Health is {first.fields['status']} (first check in this process)"
    assert first.fields["previous_status"] is None
    assert "moved" not in first.getMessage()
