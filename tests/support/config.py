"""Running `manage.py` in a subprocess with a valid production-mode configuration, one change at a time."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SECRET_KEY = "config-check-" + "k" * 20 + secrets.token_urlsafe(24)
# Production mode (DJANGO_DEBUG unset) on loopback: every refusal below is one change from this.
VALID = {
    "DATABASE_URL": "sqlite:////tmp/paymentsite-config-check.sqlite3",
    "DB_ALLOW_SQLITE": "true",
    "DJANGO_SECRET_KEY": SECRET_KEY,
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
    "DJANGO_SECURE_SSL_REDIRECT": "false",
    "PAYMENT_SERVICE_URL": "http://127.0.0.1:8099/v1/charges",
    "PAYMENT_API_KEY": "sk_test_config_check",
}
OURS = ("PAYMENT_", "DB_", "DJANGO_", "DATABASE_URL")
# Kept from the test run (tests/service.env): a developer's .env must not fill in what a test unset.
KEPT = ("DJANGO_READ_ENV_FILE",)


def service_env(**overrides: str | None) -> dict[str, str]:
    """VALID with overrides (None unsets), nothing inherited from the test run's own configuration."""
    env = {key: value for key, value in os.environ.items() if key in KEPT or not key.startswith(OURS)}
    env.update(VALID)
    env.update(overrides)
    return {key: value for key, value in env.items() if value is not None}


def run_manage(*args: str, **overrides: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=service_env(**overrides),
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_check(**overrides: str | None) -> subprocess.CompletedProcess[str]:
    return run_manage("check", **overrides)
