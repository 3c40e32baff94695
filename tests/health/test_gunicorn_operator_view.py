"""The operator's view under real gunicorn with several workers: /health/ gives one answer for
the service, and /metrics (every worker's files summed) is clean for promtool and OpenMetrics."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
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

from fakeprovider import FakeProvider
from tests.health.test_gunicorn import free_port, gunicorn_command
from tests.support.health import OPERATOR_TOKEN
from tests.support.service import TEST_API_KEY, database_url_for_subprocess

WORKERS = 3
PROBE_S = 1  # PAYMENT_HEALTH_PROBE_S: the documented bound on disagreement
CALLS = 48  # /health/ calls per round, spread over the workers
CHARGE = {"amount": 500, "currency": "EUR", "source": "tok_visa"}


@contextlib.contextmanager
def running_gunicorn(fake_provider: FakeProvider, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "PAYMENT_SERVICE_URL": fake_provider.url,
        "PAYMENT_HEALTH_URL": fake_provider.health_url,
        "PAYMENT_HEALTH_PROBE_S": str(PROBE_S),
        "PAYMENT_API_KEY": TEST_API_KEY,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(WORKERS),
        "GUNICORN_THREADS": "10",
        "PAYMENT_MAX_CONCURRENT_CALLS": "8",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "METRICS_TOKEN": OPERATOR_TOKEN,
    }
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            gunicorn_command(), cwd=django_settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if requests.get(f"{url}/health/live", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
            yield url, log_path
        finally:
            process.terminate()
            process.wait(timeout=15)


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
                # Each worker logs its own move once: WORKERS of them means every worker served it.
                moved = status_changes(log_path).count(change)
                return set(rounds[name]) == {status} and moved == WORKERS

            return check

        until(
            lambda: (
                set(health_round(url)) == {200} and status_changes(log_path) == [(None, "pass")] * WORKERS
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
