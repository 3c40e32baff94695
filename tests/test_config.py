from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VALID = {
    "DATABASE_URL": "sqlite:////tmp/paymentsite-config-check.sqlite3",
    "PAYMENT_SERVICE_URL": "http://127.0.0.1:8099/v1/charges",
    "PAYMENT_API_KEY": "sk_test_config_check",
}


def run_check(**overrides: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PAYMENT_", "DB_"))}
    env.update(VALID)
    env.update(overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_valid_configuration_passes_the_check() -> None:
    result = run_check()

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DB_CONNECTION_LIMIT", "ten", "DB_CONNECTION_LIMIT='ten' is invalid: expected an integer >= 1"),
        ("DB_ACQUIRE_TIMEOUT", "-1", "DB_ACQUIRE_TIMEOUT='-1' is invalid: expected an integer >= 1"),
        ("PAYMENT_TIMEOUT_MS", "-5", "PAYMENT_TIMEOUT_MS='-5' is invalid"),
        ("PAYMENT_SERVICE_URL", "http://pay.example.com/v1", "http:// is allowed only for loopback hosts"),
        ("PAYMENT_API_KEY", "", "PAYMENT_API_KEY is required and is not set"),
        ("DB_LOG_QUERIES", "maybe", "DB_LOG_QUERIES='maybe' is invalid: expected true or false"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml' is invalid: expected one of console, json"),
        ("DATABASE_URL", "postgres://u:secret@db/x", "DATABASE_URL='postgres://…' is invalid"),
    ],
)
def test_bad_value_stops_the_check_naming_variable_and_value(
    variable: str, value: str, expected: str
) -> None:
    result = run_check(**{variable: value})

    assert result.returncode != 0
    assert expected in result.stderr
    assert "secret" not in result.stderr, "a database password must never be echoed"


def run_python(code: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **VALID, **overrides}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_wsgi_start_up_refuses_a_bad_value() -> None:
    result = run_python(
        "import paymentsite.wsgi", DB_CONNECTION_LIMIT="0", DJANGO_SETTINGS_MODULE="paymentsite.settings"
    )

    assert result.returncode != 0
    assert "DB_CONNECTION_LIMIT='0' is invalid" in result.stderr


def test_gunicorn_refuses_fewer_threads_than_the_provider_bulkhead() -> None:
    result = run_python(
        "import runpy; runpy.run_path('paymentsite/gunicorn.conf.py')",
        GUNICORN_THREADS="8",
        PAYMENT_MAX_CONCURRENT_CALLS="8",
    )

    assert result.returncode != 0
    assert "GUNICORN_THREADS=8 must exceed PAYMENT_MAX_CONCURRENT_CALLS=8" in result.stderr
