from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from django.test import Client
from rest_framework.test import APIClient

from payments import provider
from payments.fake_provider import FakeProvider
from payments.models import Transaction

CHARGE = {"amount": 1999, "currency": "USD", "source": "tok_visa"}


def charge(api: APIClient, key: str, source: str = "tok_visa") -> Any:
    return api.post("/api/v1/charges", {**CHARGE, "source": source}, format="json", HTTP_IDEMPOTENCY_KEY=key)


def circuit(client: Client) -> dict[str, Any]:
    return client.get("/health/").json()["checks"]["payment-provider:circuit"][0]


@pytest.fixture
def breaker_settings(settings: Any) -> Any:
    settings.PAYMENT_BREAKER_FAILURES = 3
    settings.PAYMENT_BREAKER_RESET_S = 1
    settings.PAYMENT_MAX_RETRIES = 0
    return settings


def open_breaker(api: APIClient, source: str = "tok_error", failures: int = 3) -> None:
    for number in range(failures):
        assert charge(api, f"failing-{number}", source).status_code in (502, 504)


@pytest.mark.parametrize("failing_source", ["tok_error", "tok_timeout"])
def test_breaker_opens_after_n_failures_and_rejects_with_503_writing_nothing(
    api: APIClient, client: Client, breaker_settings: Any, fake_provider: FakeProvider, failing_source: str
) -> None:
    breaker_settings.PAYMENT_BREAKER_RESET_S = 30
    open_breaker(api, failing_source)
    rows_before = Transaction.objects.count()
    charges_before = fake_provider.total_charges()

    rejected = charge(api, "while-open")

    assert rejected.status_code == 503
    assert 1 <= int(rejected["Retry-After"]) <= 30
    body = rejected.json()
    assert (body["error"]["type"], body["error"]["retryable"]) == ("provider_unavailable", True)
    assert body["transaction"] is None
    assert Transaction.objects.count() == rows_before, "nothing is recorded while the circuit is open"
    assert fake_provider.total_charges() == charges_before
    state = circuit(client)
    assert (state["status"], state["observedValue"], state["consecutive_failures"]) == ("fail", "open", 3)


def test_breaker_half_opens_after_reset_time_and_closes_on_success(
    api: APIClient, client: Client, breaker_settings: Any, fake_provider: FakeProvider
) -> None:
    open_breaker(api)
    assert charge(api, "reused-key").status_code == 503

    time.sleep(breaker_settings.PAYMENT_BREAKER_RESET_S + 0.1)
    half_open = circuit(client)
    trial = charge(api, "reused-key")

    assert (half_open["status"], half_open["observedValue"]) == ("warn", "half_open")
    assert trial.status_code == 201, "the client may reuse its Idempotency-Key once the provider is back"
    assert circuit(client)["observedValue"] == "closed"
    assert fake_provider.total_charges() == 1


def test_failed_trial_reopens_the_breaker(api: APIClient, breaker_settings: Any) -> None:
    open_breaker(api)
    time.sleep(breaker_settings.PAYMENT_BREAKER_RESET_S + 0.1)

    trial = charge(api, "trial", "tok_error")
    after = charge(api, "after-trial")

    assert trial.status_code == 502
    assert after.status_code == 503
    assert provider.get_client().breaker.snapshot().opened_total == 2


def test_declines_never_open_the_breaker(api: APIClient, breaker_settings: Any) -> None:
    for number in range(4):
        assert charge(api, f"declined-{number}", "tok_chargeDeclined").status_code == 402

    assert charge(api, "after-declines").status_code == 201
    assert provider.get_client().breaker.snapshot().state == "closed"


def test_provider_4xx_answers_never_open_the_breaker(api: APIClient, breaker_settings: Any) -> None:
    breaker_settings.PAYMENT_API_KEY = "sk_wrong_key"
    for number in range(4):
        assert charge(api, f"unauthorized-{number}").status_code == 502

    snapshot = provider.get_client().breaker.snapshot()
    assert (snapshot.state, snapshot.consecutive_failures, snapshot.opened_total) == ("closed", 0, 0)


def test_calls_beyond_the_bulkhead_are_refused_at_once_writing_nothing(
    live_server: Any, api_user_token: tuple[Any, str], fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_CONCURRENT_CALLS = 2
    settings.PAYMENT_TIMEOUT_MS = 3000
    fake_provider.latency_ms = 800
    url = f"{live_server.url}/api/v1/charges"
    barrier = threading.Barrier(4)

    def post(number: int, *, together: bool = True) -> requests.Response:
        if together:
            barrier.wait()
        headers = {"Authorization": f"Token {api_user_token[1]}", "Idempotency-Key": f"bulkhead-{number}"}
        return requests.post(url, json=CHARGE, headers=headers, timeout=30)

    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(post, range(4)))

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201, 201, 503, 503]
    refused = [response for response in responses if response.status_code == 503]
    assert all(
        r.json()["error"]["code"] == "provider_busy" and r.headers["Retry-After"] == "1" for r in refused
    )
    assert Transaction.objects.count() == 2, "a refused charge writes nothing"
    assert fake_provider.total_charges() == 2
    assert post(99, together=False).status_code == 201, "slots are given back after each call"
