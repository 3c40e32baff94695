from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import connection, connections
from rest_framework.test import APIClient

from apikeys.models import APIKey
from core.db import reset_pool
from fakeprovider import FakeProvider
from payments import provider

TEST_API_KEY = "sk_test_fake_for_tests"

requires_pooled_mysql = pytest.mark.skipif(
    not django_settings.DATABASE_IS_POOLED,
    reason="needs DATABASE_URL=mysql://… (the pooled backend); CI runs it on MariaDB",
)


def database_url_for_subprocess() -> str:
    """The test database, as a URL that gunicorn and manage.py subprocesses can open."""
    db = connection.settings_dict
    if not django_settings.DATABASE_IS_POOLED:
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"mysql://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}/{db['NAME']}"


@pytest.fixture(scope="session")
def fake_provider() -> Iterator[FakeProvider]:
    with FakeProvider(api_key=TEST_API_KEY, timeout_window_s=2.0) as running:
        yield running


@pytest.fixture(autouse=True)
def provider_settings(request: pytest.FixtureRequest, settings: Any) -> Any:
    """Point the service at the fake provider with short timeouts, for every test."""
    fake: FakeProvider = request.getfixturevalue("fake_provider")
    fake.reset()
    fake.latency_ms = fake.jitter_ms = 0
    fake.timeout_window_s = 2.0
    settings.PAYMENT_SERVICE_URL = fake.url
    settings.PAYMENT_HEALTH_URL = fake.health_url
    settings.PAYMENT_API_KEY = TEST_API_KEY
    settings.PAYMENT_TIMEOUT_MS = 300
    settings.PAYMENT_CONNECT_TIMEOUT_MS = 300
    settings.PAYMENT_BACKOFF_MS = 10
    settings.PAYMENT_DEADLINE_MS = 4000
    settings.PAYMENT_RECONCILE_AFTER_S = 5  # > deadline + connect + read timeouts
    settings.PAYMENT_MAX_RETRIES = 3
    settings.PAYMENT_BREAKER_FAILURES = 1000
    provider.get_client().breaker.reset()
    return settings


@pytest.fixture
def make_client(transactional_db: None) -> Callable[[str], tuple[Any, APIClient]]:
    def make(username: str) -> tuple[Any, APIClient]:
        user = get_user_model().objects.create_user(username=username, password="pw-" + username)
        _, key = APIKey.objects.issue(user, "tests")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return user, client

    return make


@pytest.fixture
def api_user_token(transactional_db: None) -> tuple[Any, str]:
    user = get_user_model().objects.create_user(username="shop", password="pw-shop")
    return user, APIKey.objects.issue(user, "tests")[1]


@pytest.fixture
def api(api_user_token: tuple[Any, str]) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_user_token[1]}")
    return client


@contextlib.contextmanager
def pool_options(**options: int | float) -> Iterator[None]:
    """Rebuild the default alias's pool with other POOL_OPTIONS for a block."""
    settings_dict = connections["default"].settings_dict
    saved = dict(settings_dict.get("POOL_OPTIONS", {}))
    settings_dict["POOL_OPTIONS"] = {**saved, **options}
    reset_pool()
    try:
        yield
    finally:
        settings_dict["POOL_OPTIONS"] = saved
        reset_pool()
