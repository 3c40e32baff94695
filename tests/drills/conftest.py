from __future__ import annotations

import os
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection

from payments.fake_provider import FakeProvider
from tests.conftest import TEST_API_KEY


def database_url_for_subprocess() -> str:
    """The test database, as a URL that gunicorn and manage.py subprocesses can open."""
    db = connection.settings_dict
    if not django_settings.DATABASE_IS_POOLED:
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"mysql://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}/{db['NAME']}"


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
