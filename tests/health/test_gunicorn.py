from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings as django_settings
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from fakeprovider import FakeProvider
from tests.support.gunicorn import free_port, gunicorn_command, serving
from tests.support.health import OPERATOR_TOKEN
from tests.support.service import TEST_API_KEY, database_url_for_subprocess

WORKERS = 2


@pytest.fixture
def gunicorn(transactional_db: None, fake_provider: FakeProvider, tmp_path: Path) -> Iterator[str]:
    settings = {
        "DATABASE_URL": database_url_for_subprocess(),
        "PAYMENT_SERVICE_URL": fake_provider.url,
        "PAYMENT_API_KEY": TEST_API_KEY,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "GUNICORN_WORKERS": str(WORKERS),
        # Enough for all eight charges to land in one worker.
        "GUNICORN_THREADS": "10",
        "PAYMENT_MAX_CONCURRENT_CALLS": "8",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
        "METRICS_TOKEN": OPERATOR_TOKEN,
    }
    with serving(settings, tmp_path / "gunicorn.log") as url:
        yield url


def scrape(url: str) -> dict[str, Any]:
    headers = {"Connection": "close", "Authorization": f"Bearer {OPERATOR_TOKEN}"}
    text = requests.get(f"{url}/metrics", headers=headers, timeout=5).text
    return {family.name: family for family in text_string_to_metric_families(text)}


@pytest.mark.slow
def test_metrics_under_gunicorn_sum_every_workers_charges(
    gunicorn: str, api_user_token: tuple[Any, str], fake_provider: FakeProvider
) -> None:
    fake_provider.latency_ms = 200  # keeps both workers busy at once
    headers = {"Authorization": f"Token {api_user_token[1]}", "Connection": "close"}

    def post(_: int) -> int:
        body = {"amount": 500, "currency": "EUR", "source": "tok_visa"}
        return requests.post(f"{gunicorn}/api/v1/charges", json=body, headers=headers, timeout=20).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(post, range(8)))
    scrapes = [scrape(gunicorn) for _ in range(4)]

    assert statuses == [201] * 8
    for families in scrapes:  # whichever worker answers, it reports every worker's charges
        succeeded = [
            s.value for s in families["paymentsite_charges"].samples if s.labels.get("outcome") == "succeeded"
        ]
        assert sum(succeeded) == 8
        posted = [
            s.value
            for s in families["paymentsite_http_requests"].samples
            if s.labels == {"route": "/api/v1/charges", "method": "POST", "status": "2xx"}
        ]
        assert posted == [8]  # one series, summed over the workers
    if django_settings.DATABASE_IS_POOLED:
        # Each worker publishes its pool gauges every second for the others' scrapes.
        deadline = time.monotonic() + 5
        while "paymentsite_db_pool_size" not in scrape(gunicorn):
            assert time.monotonic() < deadline, "no worker published its pool gauges"
            time.sleep(0.2)
    health = requests.get(f"{gunicorn}/health/", timeout=5)
    assert health.status_code == 200
    assert health.headers["Content-Type"] == "application/health+json"
    assert health.json() == {"status": "pass"}, "no detail without the token"
    # A kubelet's probe: the pod IP as Host.
    ready = requests.get(f"{gunicorn}/health/ready", headers={"Host": "10.42.7.19:8000"}, timeout=5)
    assert (ready.status_code, ready.json()) == (200, {"status": "pass"})


def test_gunicorn_stops_before_binding_on_a_bad_value(fake_provider: FakeProvider) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PAYMENT_SERVICE_URL": fake_provider.url,
        "PAYMENT_API_KEY": TEST_API_KEY,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "LOG_FORMAT": "json",
        "DB_CONNECTION_LIMIT": "abc",
    }

    # Before, the master bound the port and restarted failing workers until it was killed.
    result = subprocess.run(
        gunicorn_command(), cwd=django_settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 3, result  # gunicorn's "worker failed to boot" status
    assert "DB_CONNECTION_LIMIT='abc' is invalid: expected an integer >= 1" in result.stderr
    assert "Listening at" not in result.stdout
    assert "Booting worker" not in result.stdout
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    [invalid] = [event for event in events if event["event"] == "config.invalid"]
    assert invalid["errors"] == [
        "DB_CONNECTION_LIMIT='abc' is invalid: expected an integer >= 1 and <= 1000."
    ]
    with socket.socket() as probe:  # nothing holds the port
        probe.bind(("127.0.0.1", port))


@pytest.mark.slow
def test_gunicorn_access_lines_carry_the_request_id_as_a_field(gunicorn: str, tmp_path: Path) -> None:
    supplied = requests.get(f"{gunicorn}/health/live", headers={"X-Request-ID": "access-1"}, timeout=5)
    made = requests.get(f"{gunicorn}/no-such-page", timeout=5)

    expected = {
        "GET /health/live": supplied.headers["X-Request-ID"],
        "GET /no-such-page": made.headers["X-Request-ID"],
    }
    assert expected["GET /health/live"] == "access-1"
    # Other tests of this module's server read /health/live too: each request's own line
    # must be there with its id.
    found: dict[str, set[str]] = {request: set() for request in expected}
    deadline = time.monotonic() + 10  # gunicorn writes the line after the response
    while any(expected[request] not in found[request] for request in expected):
        assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
        for line in (tmp_path / "gunicorn.log").read_text().splitlines():
            entry = json.loads(line) if line.startswith("{") else {"logger": ""}
            for request in expected:
                if entry["logger"] == "gunicorn.access" and request in entry["message"]:
                    found[request].add(entry["request_id"])
        time.sleep(0.1)
    assert all(found[request] for request in expected)


# The operator's view under real gunicorn with several workers: /health/ gives one answer for
# the service, and /metrics (every worker's files summed) is clean for promtool and OpenMetrics.

VIEW_WORKERS = 3  # the gunicorn fixture above runs WORKERS; these tests start three
PROBE_S = 1  # PAYMENT_HEALTH_PROBE_S: the documented bound on disagreement
CALLS = 48  # /health/ calls per round, spread over the workers
CHARGE = {"amount": 500, "currency": "EUR", "source": "tok_visa"}


@contextlib.contextmanager
def running_gunicorn(fake_provider: FakeProvider, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    settings = {
        "DATABASE_URL": database_url_for_subprocess(),
        "PAYMENT_SERVICE_URL": fake_provider.url,
        "PAYMENT_HEALTH_URL": fake_provider.health_url,
        "PAYMENT_HEALTH_PROBE_S": str(PROBE_S),
        "PAYMENT_API_KEY": TEST_API_KEY,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "GUNICORN_WORKERS": str(VIEW_WORKERS),
        "GUNICORN_THREADS": "10",
        "PAYMENT_MAX_CONCURRENT_CALLS": "8",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "METRICS_TOKEN": OPERATOR_TOKEN,
    }
    log_path = tmp_path / "gunicorn.log"
    with serving(settings, log_path) as url:
        yield url, log_path


def health_round(url: str) -> list[int]:
    """CALLS anonymous /health/ reads, eight at a time on fresh connections, so every worker serves some."""

    def get(_: int) -> int:
        return requests.get(f"{url}/health/", headers={"Connection": "close"}, timeout=10).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(get, range(CALLS)))


def status_changes(log_path: Path) -> list[tuple[Any, Any]]:
    changes = []
    for line in log_path.read_text().splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        if entry.get("event") == "health.status_changed":
            changes.append((entry["previous_status"], entry["status"]))
    return changes


def until(condition: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def charge(url: str, token: str) -> requests.Response:
    headers = {"Authorization": f"Token {token}", "Connection": "close"}
    return requests.post(f"{url}/api/v1/charges", json=CHARGE, headers=headers, timeout=20)


@pytest.mark.slow
def test_health_gives_one_answer_across_workers_when_the_provider_refuses_then_accepts_our_key(
    transactional_db: None, api_user_token: tuple[Any, str], fake_provider: FakeProvider, tmp_path: Path
) -> None:
    with running_gunicorn(fake_provider, tmp_path) as (url, log_path):
        rounds: dict[str, list[int]] = {}

        def agree(name: str, status: int, change: tuple[str, str]) -> Callable[[], bool]:
            def check() -> bool:
                rounds[name] = health_round(url)
                # Each worker logs its own move once: VIEW_WORKERS of them means every worker served it.
                moved = status_changes(log_path).count(change)
                return set(rounds[name]) == {status} and moved == VIEW_WORKERS

            return check

        until(
            lambda: (
                set(health_round(url)) == {200}
                and status_changes(log_path) == [(None, "pass")] * VIEW_WORKERS
            ),
            "every worker's first /health/ passes",
            timeout_s=20,
        )

        fake_provider.api_key = "sk_revoked_by_the_provider"
        try:
            refused = charge(url, api_user_token[1])  # served by one worker only
            assert (refused.status_code, refused.json()["error"]["code"]) == (503, "provider_misconfigured")
            # Documented: every worker agrees within PAYMENT_HEALTH_PROBE_S; generous for a busy machine.
            until(agree("refused", 503, ("pass", "fail")), "every worker fails", timeout_s=20 * PROBE_S)
        finally:
            fake_provider.api_key = TEST_API_KEY

        accepted = charge(url, api_user_token[1])
        assert accepted.status_code == 201
        until(agree("accepted", 200, ("fail", "pass")), "every worker passes again", timeout_s=20 * PROBE_S)

        assert rounds["refused"] == [503] * CALLS
        assert rounds["accepted"] == [200] * CALLS


PROMTOOL = shutil.which("promtool")


@pytest.mark.slow
def test_metrics_summed_over_workers_are_clean_in_both_formats(
    transactional_db: None, api_user_token: tuple[Any, str], fake_provider: FakeProvider, tmp_path: Path
) -> None:
    with running_gunicorn(fake_provider, tmp_path) as (url, _):
        assert charge(url, api_user_token[1]).status_code == 201
        bearer = {"Authorization": f"Bearer {OPERATOR_TOKEN}", "Connection": "close"}
        plain = requests.get(f"{url}/metrics", headers=bearer, timeout=5)
        openmetrics = requests.get(
            f"{url}/metrics",
            headers={**bearer, "Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"},
            timeout=5,
        )

    assert plain.headers["Content-Type"].startswith("text/plain")
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    families = {family.name: family for family in parse_openmetrics(openmetrics.text)}
    succeeded = [
        s.value for s in families["paymentsite_charges"].samples if s.labels == {"outcome": "succeeded"}
    ]
    assert succeeded == [1.0]
    assert "_created" not in plain.text + openmetrics.text
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus); both formats parsed")
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=plain.content, capture_output=True, timeout=30
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
