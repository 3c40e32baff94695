from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from hypothesis.configuration import set_hypothesis_home_dir
from rest_framework.test import APIClient

from apikeys.models import APIKey
from fakeprovider import FakeProvider
from payments import provider
from tests.support.service import TEST_API_KEY

# Fixtures that live beside their helpers: events_provider.
pytest_plugins = ["tests.support.events", "tests.support.network"]


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis (the model test, and schemathesis in the fuzz test) keeps its example database
    and caches in a temporary directory, removed at the end, not in .hypothesis/ in the
    repository's tree; HYPOTHESIS_STORAGE_DIRECTORY, when set, says where instead."""
    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        return
    home = tempfile.mkdtemp(prefix="paymentsite-hypothesis-")
    set_hypothesis_home_dir(home)
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))


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
