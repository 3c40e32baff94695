from __future__ import annotations

import os
from typing import Any

import pytest

from payments.fake_provider import FakeProvider
from tests.conftest import TEST_API_KEY


@pytest.fixture
def service_env(fake_provider: FakeProvider) -> dict[str, Any]:
    """What a service process needs besides DATABASE_URL: the session's fake provider."""
    return {
        **os.environ,
        "PAYMENT_SERVICE_URL": fake_provider.url,
        "PAYMENT_API_KEY": TEST_API_KEY,
        "GUNICORN_THREADS": "4",
        "PAYMENT_MAX_CONCURRENT_CALLS": "3",
        "LOG_LEVEL": "WARNING",
    }
