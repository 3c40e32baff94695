from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from payments.fake_provider import FakeProvider

API_KEY = "sk_test_fake"
TIMEOUT_WINDOW_S = 0.5
CLIENT_TIMEOUT_S = 2.0


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with FakeProvider(api_key=API_KEY, timeout_window_s=TIMEOUT_WINDOW_S) as fake:
        yield fake


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as client:
        yield client


def charge_body(source: str = "tok_visa", amount: int = 1250, **extra: Any) -> dict[str, Any]:
    return {"amount": amount, "currency": "eur", "source": source, "reference": "tx-1", **extra}


def charge_headers(key: str | None, api_key: str = API_KEY) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {api_key}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def post_charge(
    session: requests.Session,
    provider: FakeProvider,
    key: str,
    body: dict[str, Any],
    timeout_s: float = CLIENT_TIMEOUT_S,
) -> requests.Response:
    return session.post(provider.url, json=body, headers=charge_headers(key), timeout=timeout_s)


def lookup_charge(session: requests.Session, provider: FakeProvider, key: str) -> requests.Response:
    return session.get(f"{provider.url}/{key}", headers=charge_headers(None), timeout=0.2)


def test_charge_succeeds_and_replay_returns_same_charge_without_charging_again(
    provider: FakeProvider, session: requests.Session
) -> None:
    first = post_charge(session, provider, "key-1", charge_body())
    replay = post_charge(session, provider, "key-1", charge_body())

    assert first.status_code == 200
    assert first.headers["Content-Type"] == "application/json"
    charge = first.json()
    assert charge["id"].startswith("ch_")
    assert charge["status"] == "succeeded"
    assert (charge["amount"], charge["currency"], charge["reference"]) == (1250, "eur", "tx-1")
    assert isinstance(charge["created"], int)
    assert replay.status_code == 200
    assert replay.json() == charge
    assert provider.charge_count("key-1") == 1
    assert provider.request_count("key-1") == 2
    assert provider.total_charges() == 1


def test_same_key_with_different_body_is_rejected_and_not_charged_again(
    provider: FakeProvider, session: requests.Session
) -> None:
    post_charge(session, provider, "key-1", charge_body(amount=1250))

    reused = post_charge(session, provider, "key-1", charge_body(amount=9999))

    assert reused.status_code == 400
    assert reused.json()["error"]["type"] == "idempotency_error"
    assert reused.json()["error"]["code"] == "key_reused"
    assert provider.charge_count("key-1") == 1


@pytest.mark.parametrize(
    ("source", "decline_code", "message"),
    [
        ("tok_chargeDeclined", "generic_decline", "Your card was declined."),
        ("tok_insufficientFunds", "insufficient_funds", "Your card has insufficient funds."),
    ],
)
def test_declined_card_answers_402_with_decline_code_and_is_not_charged(
    provider: FakeProvider,
    session: requests.Session,
    source: str,
    decline_code: str,
    message: str,
) -> None:
    response = post_charge(session, provider, "key-1", charge_body(source))
    replay = post_charge(session, provider, "key-1", charge_body(source))

    assert response.status_code == 402
    assert response.json() == {
        "error": {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": decline_code,
            "message": message,
        }
    }
    assert (replay.status_code, replay.json()) == (402, response.json())
    assert provider.charge_count("key-1") == 0


def test_lookup_of_declined_key_returns_declined_charge_with_its_error(
    provider: FakeProvider, session: requests.Session
) -> None:
    post_charge(session, provider, "key-1", charge_body("tok_chargeDeclined"))

    lookup = lookup_charge(session, provider, "key-1")

    assert lookup.status_code == 200
    charge = lookup.json()
    assert charge["id"].startswith("ch_")
    assert charge["status"] == "declined"
    assert charge["error"]["decline_code"] == "generic_decline"


@pytest.mark.parametrize("api_key", ["sk_test_wrong", ""])
def test_charge_with_wrong_or_missing_api_key_is_rejected_with_401(
    provider: FakeProvider, session: requests.Session, api_key: str
) -> None:
    headers = charge_headers("key-1", api_key=api_key)

    response = session.post(provider.url, json=charge_body(), headers=headers, timeout=2)
    lookup = session.get(f"{provider.url}/key-1", headers=headers, timeout=2)

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert lookup.status_code == 401
    assert provider.charge_count("key-1") == 0


def test_charge_without_idempotency_key_is_rejected_with_400(
    provider: FakeProvider, session: requests.Session
) -> None:
    headers = charge_headers(None)

    response = session.post(provider.url, json=charge_body(), headers=headers, timeout=2)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert provider.total_charges() == 0


@pytest.mark.parametrize(
    "body",
    [
        {"currency": "eur", "source": "tok_visa"},
        charge_body(amount=0),
        charge_body(amount=True),
        charge_body(amount="1250"),
        {**charge_body(), "currency": "euro"},
        charge_body(source="visa"),
        charge_body(description=42),
        charge_body(metadata={"order": "1"}),
        [1, 2],
    ],
    ids=[
        "missing-amount",
        "zero-amount",
        "boolean-amount",
        "string-amount",
        "four-letter-currency",
        "source-not-a-token",
        "non-string-description",
        "unknown-field",
        "not-an-object",
    ],
)
def test_invalid_charge_body_is_rejected_with_400_and_not_charged(
    provider: FakeProvider, session: requests.Session, body: Any
) -> None:
    response = post_charge(session, provider, "key-1", body)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert provider.total_charges() == 0


def test_malformed_json_body_is_rejected_with_400_and_not_charged(
    provider: FakeProvider, session: requests.Session
) -> None:
    headers = {**charge_headers("key-1"), "Content-Type": "application/json"}

    response = session.post(provider.url, data=b"{not json", headers=headers, timeout=2)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert provider.total_charges() == 0


def test_flaky_source_fails_twice_with_503_then_charges_once(
    provider: FakeProvider, session: requests.Session
) -> None:
    body = charge_body("tok_flaky")

    responses = [post_charge(session, provider, "key-1", body) for _ in range(4)]

    assert [response.status_code for response in responses] == [503, 503, 200, 200]
    assert responses[0].json()["error"] == {
        "type": "api_error",
        "code": "service_unavailable",
        "message": responses[0].json()["error"]["message"],
    }
    assert responses[2].json()["id"] == responses[3].json()["id"]
    assert provider.charge_count("key-1") == 1
    assert provider.request_count("key-1") == 4


def test_rate_limited_source_answers_429_with_retry_after_once_then_charges(
    provider: FakeProvider, session: requests.Session
) -> None:
    limited = post_charge(session, provider, "key-1", charge_body("tok_rateLimited"))
    assert provider.charge_count("key-1") == 0

    retried = post_charge(session, provider, "key-1", charge_body("tok_rateLimited"))

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert retried.status_code == 200
    assert provider.charge_count("key-1") == 1


def test_error_source_always_answers_500_and_never_charges(
    provider: FakeProvider, session: requests.Session
) -> None:
    body = charge_body("tok_error")

    responses = [post_charge(session, provider, "key-1", body) for _ in range(3)]

    assert [response.status_code for response in responses] == [500, 500, 500]
    assert responses[0].json()["error"]["code"] == "internal_error"
    assert provider.charge_count("key-1") == 0
    assert lookup_charge(session, provider, "key-1").status_code == 404


def test_timeout_source_charges_at_once_but_holds_answers_until_the_window_has_passed(
    provider: FakeProvider, session: requests.Session
) -> None:
    body = charge_body("tok_timeout")
    started = time.monotonic()

    with pytest.raises(requests.exceptions.ReadTimeout):
        post_charge(session, provider, "key-1", body, timeout_s=0.2)
    assert provider.charge_count("key-1") == 1
    lookup = lookup_charge(session, provider, "key-1")
    assert lookup.status_code == 200
    assert lookup.json()["status"] == "succeeded"
    with pytest.raises(requests.exceptions.ReadTimeout):
        post_charge(session, provider, "key-1", body, timeout_s=0.1)

    time.sleep(max(0.0, started + TIMEOUT_WINDOW_S + 0.1 - time.monotonic()))
    after_window = post_charge(session, provider, "key-1", body, timeout_s=0.2)

    assert after_window.status_code == 200
    assert after_window.json()["id"] == lookup.json()["id"]
    assert provider.charge_count("key-1") == 1
    assert provider.request_count("key-1") == 3


def test_timeout_source_answers_a_patient_client_with_the_charge_after_the_window(
    provider: FakeProvider, session: requests.Session
) -> None:
    started = time.monotonic()

    response = post_charge(session, provider, "key-1", charge_body("tok_timeout"))

    assert time.monotonic() - started >= TIMEOUT_WINDOW_S - 0.05
    assert response.status_code == 200
    assert response.json()["id"] == lookup_charge(session, provider, "key-1").json()["id"]


def test_concurrent_requests_with_one_key_charge_exactly_once(provider: FakeProvider) -> None:
    provider.latency_ms = 100
    attempts = 20
    barrier = threading.Barrier(attempts)
    headers = charge_headers("key-1")

    def attempt(_: int) -> requests.Response:
        barrier.wait()
        return requests.post(provider.url, json=charge_body(), headers=headers, timeout=5)

    with ThreadPoolExecutor(max_workers=attempts) as pool:
        responses = list(pool.map(attempt, range(attempts)))

    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 409}
    assert 409 in statuses
    charge_ids = {response.json()["id"] for response in responses if response.status_code == 200}
    assert len(charge_ids) == 1
    conflict = next(response for response in responses if response.status_code == 409)
    assert conflict.json()["error"]["code"] == "request_in_progress"
    assert provider.charge_count("key-1") == 1
    assert provider.total_charges() == 1
    assert provider.request_count("key-1") == attempts


def test_lookup_of_unknown_key_is_404(provider: FakeProvider, session: requests.Session) -> None:
    response = lookup_charge(session, provider, "never-used")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "resource_missing"


def test_lookup_of_charged_key_returns_the_charge_even_when_the_key_needs_escaping(
    provider: FakeProvider, session: requests.Session
) -> None:
    charge = post_charge(session, provider, "order 7/1", charge_body()).json()

    lookup = session.get(f"{provider.url}/order%207%2F1", headers=charge_headers(None), timeout=0.2)

    assert lookup.status_code == 200
    assert lookup.json() == charge


def test_fake_charges_endpoint_reports_counts_and_reset_forgets_them(
    provider: FakeProvider, session: requests.Session
) -> None:
    post_charge(session, provider, "paid", charge_body())
    post_charge(session, provider, "paid", charge_body())
    post_charge(session, provider, "declined", charge_body("tok_chargeDeclined"))
    ledger_url = provider.url.replace("/v1/charges", "/_fake/charges")
    reset_url = provider.url.replace("/v1/charges", "/_fake/reset")

    ledger = session.get(ledger_url, timeout=2)
    reset = session.post(reset_url, timeout=2)
    after_reset = session.get(ledger_url, timeout=2)

    assert ledger.json() == {"total": 1, "by_key": {"paid": 1, "declined": 0}}
    assert reset.status_code == 200
    assert after_reset.json() == {"total": 0, "by_key": {}}
    assert provider.request_count("paid") == 0
    assert lookup_charge(session, provider, "paid").status_code == 404


def test_health_answers_ok_and_other_paths_and_methods_are_refused(
    provider: FakeProvider, session: requests.Session
) -> None:
    health = session.get(provider.health_url, timeout=2)
    unknown = session.get(provider.url.replace("/v1/charges", "/v2/nothing"), timeout=2)
    wrong_method = session.put(provider.url, json=charge_body(), timeout=2)

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert unknown.status_code == 404
    assert unknown.headers["Content-Type"] == "application/json"
    assert wrong_method.status_code == 405
    assert wrong_method.headers["Allow"] == "POST"


def test_keep_alive_requests_on_one_session_answer_without_delay(
    provider: FakeProvider, session: requests.Session
) -> None:
    started = time.monotonic()

    responses = [session.get(provider.health_url, timeout=2) for _ in range(20)]

    assert all(response.status_code == 200 for response in responses)
    assert time.monotonic() - started < 0.5


def test_configured_latency_delays_the_charge_answer_while_running(
    provider: FakeProvider, session: requests.Session
) -> None:
    provider.latency_ms = 150
    started = time.monotonic()

    response = post_charge(session, provider, "key-1", charge_body())

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.15


def test_stop_wakes_a_held_request_and_returns_quickly() -> None:
    with FakeProvider(api_key=API_KEY, timeout_window_s=30) as provider:
        held = threading.Thread(target=_post_ignoring_errors, args=(provider.url,))
        held.start()
        deadline = time.monotonic() + 2
        while provider.charge_count("key-1") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert provider.charge_count("key-1") == 1

        started = time.monotonic()
        provider.stop()
        held.join(timeout=2)

    assert time.monotonic() - started < 1
    assert not held.is_alive()


def test_restart_serves_the_same_url_and_remembers_charges(
    provider: FakeProvider, session: requests.Session
) -> None:
    charge = post_charge(session, provider, "key-1", charge_body()).json()
    url = provider.url

    provider.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(provider.health_url, timeout=1)
    provider.start()

    assert provider.url == url
    assert lookup_charge(session, provider, "key-1").json() == charge


def _post_ignoring_errors(url: str) -> None:
    with contextlib.suppress(requests.exceptions.RequestException):
        body = charge_body("tok_timeout")
        requests.post(url, json=body, headers=charge_headers("key-1"), timeout=5)
