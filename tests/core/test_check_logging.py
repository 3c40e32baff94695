"""manage.py check_logging against moto's CloudWatch Logs server on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

from django.conf import settings

from core.events import EVENT_CATALOGUE
from fakeprovider import FakeProvider
from tests.support.cloudwatch import service_env, shipped_events
from tests.support.network import closed_port


def check_logging(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # The timeout bounds the failure path: botocore's retries, then a clean exit 1.
    return subprocess.run(
        [sys.executable, "manage.py", "check_logging", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def report(stdout: str) -> dict[str, str]:
    """The command's lines `<event> arrived|missing`, by event."""
    words = (line.split() for line in stdout.splitlines())
    return {w[0]: w[1] for w in words if len(w) == 2 and w[0] in EVENT_CATALOGUE}


def test_every_kind_of_event_arrives_in_the_log_group(
    cloudwatch_endpoint: str, logs_client: Any, fake_provider: FakeProvider
) -> None:
    group = f"/paymentsite/check-{uuid.uuid4().hex[:12]}"

    result = check_logging(service_env(cloudwatch_endpoint, group, fake_provider), "--wait", "20")

    assert result.returncode == 0, result.stderr
    assert report(result.stdout) == dict.fromkeys(EVENT_CATALOGUE, "arrived")
    shipped = shipped_events(logs_client, group, '"check_logging"')
    assert {event["event"] for event in shipped} == set(EVENT_CATALOGUE)
    assert len({event["check_id"] for event in shipped}) == 1, "every event carries the run's check_id"
    assert {event["level"] for event in shipped if event["event"] == "config.invalid"} == {"CRITICAL"}


def test_an_unreachable_endpoint_exits_1_and_lists_every_kind_missing(
    cloudwatch_endpoint: str, fake_provider: FakeProvider
) -> None:
    env = service_env(cloudwatch_endpoint, "/paymentsite/unreachable", fake_provider)
    env["CLOUDWATCH_ENDPOINT_URL"] = f"http://127.0.0.1:{closed_port()}"

    result = check_logging(env, "--wait", "5")

    assert result.returncode == 1
    assert report(result.stdout) == dict.fromkeys(EVENT_CATALOGUE, "missing")
    assert "shipping to '/paymentsite/unreachable' failed: EndpointConnectionError" in result.stderr


def test_without_a_log_group_it_exits_2_with_one_line(fake_provider: FakeProvider) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLOUDWATCH_")}
    env.update(PAYMENT_SERVICE_URL=fake_provider.url, PAYMENT_API_KEY="sk_test_check_logging")
    env.pop("VUE_APP_LOG_GROUP_NAME", None)

    result = check_logging(env)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "CommandError: CloudWatch is not configured: set CLOUDWATCH_LOG_GROUP (and AWS_REGION)."
    ]
