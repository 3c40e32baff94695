"""CloudWatch shipping from real processes: start-up that stops, and gunicorn workers."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
import requests
from django.conf import settings

from fakeprovider import FakeProvider
from tests.support.cloudwatch import service_env, shipped_events
from tests.support.network import closed_port


def test_invalid_configuration_is_logged_and_shipped_before_the_process_stops(
    cloudwatch_endpoint: str, logs_client: Any, fake_provider: FakeProvider
) -> None:
    group = f"/paymentsite/test-{uuid.uuid4().hex[:12]}"

    result = subprocess.run(
        [sys.executable, "-c", "import paymentsite.wsgi"],
        cwd=settings.BASE_DIR,
        env=service_env(cloudwatch_endpoint, group, fake_provider, LOG_LEVEL="LOUD"),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "LOG_LEVEL='LOUD' is invalid" in result.stderr
    [on_stdout] = [json.loads(line) for line in result.stdout.splitlines() if '"config.invalid"' in line]
    [shipped] = shipped_events(logs_client, group, '"config.invalid"')
    assert shipped == on_stdout
    assert shipped["level"] == "CRITICAL"
    assert shipped["errors"] == [
        "LOG_LEVEL='LOUD' is invalid: expected one of CRITICAL, DEBUG, ERROR, INFO, WARNING."
    ]


@pytest.mark.slow
def test_gunicorn_workers_ship_from_their_own_streams_and_flush_at_shutdown(
    cloudwatch_endpoint: str, logs_client: Any, fake_provider: FakeProvider
) -> None:
    group = f"/paymentsite/test-{uuid.uuid4().hex[:12]}"
    base_url = f"http://127.0.0.1:{closed_port()}"
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "paymentsite/gunicorn.conf.py"],
        cwd=settings.BASE_DIR,
        env=service_env(
            cloudwatch_endpoint,
            group,
            fake_provider,
            GUNICORN_BIND=base_url.removeprefix("http://"),
            GUNICORN_WORKERS="2",
            GUNICORN_THREADS="4",
            PAYMENT_MAX_CONCURRENT_CALLS="3",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    request_ids = [f"gunicorn-{number}" for number in range(8)]
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{base_url}/health/live", timeout=1).raise_for_status()
                break
            except requests.RequestException:
                assert server.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.2)
        for request_id in request_ids:
            response = requests.get(
                f"{base_url}/no-such-page", headers={"X-Request-ID": request_id}, timeout=5
            )
            assert (response.status_code, response.headers["X-Request-ID"]) == (404, request_id)
    finally:
        server.send_signal(signal.SIGTERM)
        stdout, _ = server.communicate(timeout=30)

    not_found = shipped_events(logs_client, group, '"Not Found"')
    assert sorted(event["request_id"] for event in not_found) == request_ids
    # gunicorn's own lines are JSON on stdout too (gunicorn.conf.py, logconfig_dict).
    worker_pids = {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", stdout)}
    streams = logs_client.describe_log_streams(logGroupName=group)["logStreams"]
    stream_pids = {int(stream["logStreamName"].rsplit("/", 1)[1]) for stream in streams}
    assert stream_pids and stream_pids <= worker_pids, (stream_pids, worker_pids)
    assert server.pid not in stream_pids, "the master must not ship (its handler would cross the fork)"
