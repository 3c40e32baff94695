from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from fakeprovider import FakeProvider, Fault

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


def control_url(provider: FakeProvider, path: str) -> str:
    return provider.url.replace("/v1/charges", path)


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def post_in_background(
    provider: FakeProvider, key: str, body: dict[str, Any]
) -> tuple[threading.Thread, list[requests.Response]]:
    answers: list[requests.Response] = []

    def post() -> None:
        answers.append(requests.post(provider.url, json=body, headers=charge_headers(key), timeout=10))

    thread = threading.Thread(target=post)
    thread.start()
    return thread, answers


def test_hold_charges_at_once_and_answers_only_after_the_client_gave_up(
    provider: FakeProvider, session: requests.Session
) -> None:
    provider.inject({"kind": "hold", "ms": 5000})

    with pytest.raises(requests.exceptions.ReadTimeout):
        post_charge(session, provider, "key-1", charge_body(), timeout_s=0.3)

    charge = provider.ledger()["key-1"]
    assert not provider.in_progress("key-1")
    assert lookup_charge(session, provider, "key-1").json() == charge
    replay = post_charge(session, provider, "key-1", charge_body())
    assert (replay.status_code, replay.json()) == (200, charge)
    assert provider.total_charges() == 1
    assert provider.faults_applied() == [("hold", "charge", "key-1")]


def test_slow_keeps_the_key_in_progress_then_charges_once(
    provider: FakeProvider, session: requests.Session
) -> None:
    provider.inject({"kind": "slow", "ms": 1500})
    thread, answers = post_in_background(provider, "key-1", charge_body())
    wait_until(lambda: provider.in_progress("key-1"))

    concurrent = post_charge(session, provider, "key-1", charge_body())
    lookup = lookup_charge(session, provider, "key-1")
    assert provider.ledger() == {}
    thread.join(timeout=10)

    assert concurrent.status_code == 409
    assert concurrent.json()["error"]["code"] == "request_in_progress"
    assert lookup.status_code == 404
    assert answers[0].status_code == 200
    assert provider.ledger() == {"key-1": answers[0].json()}
    assert provider.request_count("key-1") == 2


@pytest.mark.parametrize(("source", "charged"), [("tok_visa", True), ("tok_chargeDeclined", False)])
def test_drop_after_acts_on_the_charge_and_closes_the_connection_unanswered(
    provider: FakeProvider, session: requests.Session, source: str, charged: bool
) -> None:
    provider.inject({"kind": "drop_after"})

    with pytest.raises(requests.exceptions.ConnectionError):
        post_charge(session, provider, "key-1", charge_body(source))

    assert ("key-1" in provider.ledger()) is charged
    lookup = lookup_charge(session, provider, "key-1")
    assert lookup.json()["status"] == ("succeeded" if charged else "declined")
    replay = post_charge(session, provider, "key-1", charge_body(source))
    assert replay.status_code == (200 if charged else 402)
    assert provider.total_charges() == int(charged)


def test_drop_after_is_seen_as_remote_disconnected_by_a_raw_client(provider: FakeProvider) -> None:
    provider.inject({"kind": "drop_after"})
    connection = http.client.HTTPConnection(provider.host, provider.port, timeout=2)
    headers = {**charge_headers("key-1"), "Content-Type": "application/json"}

    connection.request("POST", "/v1/charges", body=json.dumps(charge_body()), headers=headers)
    with pytest.raises(http.client.RemoteDisconnected):
        connection.getresponse()
    connection.close()

    assert list(provider.ledger()) == ["key-1"]


def test_drop_before_closes_the_connection_without_charging(
    provider: FakeProvider, session: requests.Session
) -> None:
    provider.inject({"kind": "drop_before"})

    with pytest.raises(requests.exceptions.ConnectionError):
        post_charge(session, provider, "key-1", charge_body())
    lookup = lookup_charge(session, provider, "key-1")
    retried = post_charge(session, provider, "key-1", charge_body())

    assert lookup.status_code == 404
    assert retried.status_code == 200
    assert provider.ledger() == {"key-1": retried.json()}
    assert provider.request_count("key-1") == 2


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [
        (400, "invalid_request_error", "invalid_request"),
        (401, "authentication_error", None),
        (409, "idempotency_error", "request_in_progress"),
        (429, "rate_limit_error", "rate_limited"),
        (500, "api_error", "internal_error"),
        (502, "api_error", "bad_gateway"),
        (503, "api_error", "service_unavailable"),
    ],
)
def test_status_answers_that_error_without_charging_and_the_next_request_charges_once(
    provider: FakeProvider, session: requests.Session, status: int, error_type: str, code: str | None
) -> None:
    provider.inject({"kind": "status", "status": status})

    faulted = post_charge(session, provider, "key-1", charge_body())
    assert provider.ledger() == {}
    retried = post_charge(session, provider, "key-1", charge_body())

    assert faulted.status_code == status
    assert faulted.json()["error"]["type"] == error_type
    assert faulted.json()["error"].get("code") == code
    assert retried.status_code == 200
    assert provider.ledger() == {"key-1": retried.json()}


def test_status_429_sends_retry_after_when_given(provider: FakeProvider, session: requests.Session) -> None:
    provider.inject_many(
        [{"kind": "status", "status": 429, "retry_after": 7}, {"kind": "status", "status": 429}]
    )

    with_hint = post_charge(session, provider, "key-1", charge_body())
    without_hint = post_charge(session, provider, "key-1", charge_body())

    assert (with_hint.status_code, with_hint.headers["Retry-After"]) == (429, "7")
    assert (without_hint.status_code, "Retry-After" in without_hint.headers) == (429, False)


GARBAGE_CHECKS: dict[str, Callable[[requests.Response, dict[str, Any]], bool]] = {
    "not_json": lambda answer, charge: answer.text == "<html>oops",
    "long_id": lambda answer, charge: (
        len(answer.json()["id"]) == 300 and answer.json()["id"].startswith(charge["id"])
    ),
    "bad_id": lambda answer, charge: answer.json() == {**charge, "id": "ch_ bad\u00e9"},
    "bad_status": lambda answer, charge: answer.json() == {**charge, "status": "weird"},
    "missing_id": lambda answer, charge: answer.json() == {k: v for k, v in charge.items() if k != "id"},
    "not_object": lambda answer, charge: answer.json() == [charge],
    "deep_json": lambda answer, charge: answer.content == b"[" * 50_000 + b"]" * 50_000,
}


@pytest.mark.parametrize("variant", sorted(GARBAGE_CHECKS))
def test_garbage_makes_the_charge_and_answers_200_with_an_unusable_body(
    provider: FakeProvider, session: requests.Session, variant: str
) -> None:
    provider.inject({"kind": "garbage", "variant": variant})

    answer = post_charge(session, provider, "key-1", charge_body())

    charge = provider.ledger()["key-1"]
    assert answer.status_code == 200
    assert GARBAGE_CHECKS[variant](answer, charge)
    assert post_charge(session, provider, "key-1", charge_body()).json() == charge
    assert provider.total_charges() == 1


def test_deep_json_garbage_cannot_be_parsed(provider: FakeProvider, session: requests.Session) -> None:
    provider.inject({"kind": "garbage", "variant": "deep_json"})

    answer = post_charge(session, provider, "key-1", charge_body())

    with pytest.raises(RecursionError):
        json.loads(answer.content)


def test_lookup_faults_change_the_answer_but_not_the_charge(
    provider: FakeProvider, session: requests.Session
) -> None:
    charge = post_charge(session, provider, "key-1", charge_body()).json()
    provider.inject_many(
        [
            {"kind": "status", "status": 503, "on": "lookup"},
            {"kind": "drop_before", "on": "lookup"},
            {"kind": "hold", "ms": 5000, "on": "lookup"},
            {"kind": "garbage", "variant": "long_id", "on": "lookup"},
        ]
    )

    unavailable = lookup_charge(session, provider, "key-1")
    with pytest.raises(requests.exceptions.ConnectionError):
        lookup_charge(session, provider, "key-1")
    with pytest.raises(requests.exceptions.ReadTimeout):
        lookup_charge(session, provider, "key-1")
    garbage = lookup_charge(session, provider, "key-1")
    healthy = lookup_charge(session, provider, "key-1")

    assert unavailable.status_code == 503
    assert (garbage.status_code, len(garbage.json()["id"])) == (200, 300)
    assert healthy.json() == charge
    assert provider.ledger() == {"key-1": charge}
    assert [kind for kind, on, key in provider.faults_applied()] == [
        "status",
        "drop_before",
        "hold",
        "garbage",
    ]


def test_faults_apply_once_in_order_to_the_requests_they_match(
    provider: FakeProvider, session: requests.Session
) -> None:
    provider.inject_many(
        [
            Fault(kind="status", status=500, key="key-2"),
            {"kind": "status", "status": 502},
            {"kind": "status", "status": 503},
        ]
    )

    lookup = lookup_charge(session, provider, "key-1")
    statuses = [
        post_charge(session, provider, key, charge_body()).status_code
        for key in ("key-1", "key-1", "key-2", "key-2")
    ]

    assert lookup.status_code == 404
    assert statuses == [502, 503, 500, 200]
    assert provider.faults_applied() == [
        ("status", "charge", "key-1"),
        ("status", "charge", "key-1"),
        ("status", "charge", "key-2"),
    ]
    assert provider.pending_faults() == []


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "explode"},
        {"kind": "hold"},
        {"kind": "hold", "ms": -1},
        {"kind": "slow", "ms": 10, "on": "lookup"},
        {"kind": "status", "status": 200},
        {"kind": "garbage", "variant": "nonsense"},
        {"kind": "drop_after", "ms": 10},
        {"kind": "drop_before", "key": ""},
        {"kind": "drop_before", "when": "now"},
    ],
)
def test_invalid_faults_are_refused_and_none_of_the_batch_is_queued(
    provider: FakeProvider, session: requests.Session, fault: dict[str, Any]
) -> None:
    batch = [{"kind": "drop_before"}, fault]

    with pytest.raises(ValueError):
        provider.inject_many(batch)
    over_http = session.post(control_url(provider, "/_fake/faults"), json={"faults": batch}, timeout=2)

    assert over_http.status_code == 400
    assert over_http.json()["error"]["type"] == "invalid_request_error"
    assert provider.pending_faults() == []


def test_faults_endpoint_queues_reports_and_clears(provider: FakeProvider, session: requests.Session) -> None:
    faults_url = control_url(provider, "/_fake/faults")
    queued = session.post(faults_url, json={"faults": [{"kind": "status", "status": 503}]}, timeout=2)
    faulted = post_charge(session, provider, "key-1", charge_body())
    session.post(faults_url, json={"faults": [{"kind": "drop_before", "key": "k"}] * 3}, timeout=2)
    before_clear = session.get(faults_url, timeout=2).json()

    cleared_by_delete = session.delete(faults_url, timeout=2).json()
    session.post(faults_url, json={"faults": [{"kind": "drop_before"}]}, timeout=2)
    cleared_by_post = session.post(control_url(provider, "/_fake/faults/clear"), timeout=2).json()

    assert queued.json() == {
        "pending": [{"kind": "status", "on": "charge", "status": 503}],
        "applied": [],
    }
    assert faulted.status_code == 503
    assert before_clear["pending"] == [{"kind": "drop_before", "on": "charge", "key": "k"}] * 3
    assert before_clear["applied"] == [["status", "charge", "key-1"]]
    assert cleared_by_delete["pending"] == cleared_by_post["pending"] == []
    assert post_charge(session, provider, "key-1", charge_body()).status_code == 200


def test_reset_forgets_pending_and_applied_faults(provider: FakeProvider, session: requests.Session) -> None:
    provider.inject_many([{"kind": "status", "status": 503}] * 2)
    post_charge(session, provider, "key-1", charge_body())

    session.post(control_url(provider, "/_fake/reset"), timeout=2)

    assert provider.pending_faults() == []
    assert provider.faults_applied() == []
    assert post_charge(session, provider, "key-1", charge_body()).status_code == 200


def test_ledger_lists_each_charge_made_with_its_id_amount_currency_reference_and_commit_time(
    provider: FakeProvider, session: requests.Session
) -> None:
    sent_at = time.time()
    paid = post_charge(session, provider, "paid", charge_body(amount=700, reference="tx-7")).json()
    answered_at = time.time()
    post_charge(session, provider, "paid", charge_body(amount=700, reference="tx-7"))
    post_charge(session, provider, "declined", charge_body("tok_chargeDeclined"))
    post_charge(session, provider, "failed", charge_body("tok_error"))

    ledger = session.get(control_url(provider, "/_fake/ledger"), timeout=2).json()

    assert ledger == {"total": 1, "by_key": {"paid": paid}, "committed_at": provider.committed_at()}
    assert (paid["amount"], paid["currency"], paid["reference"]) == (700, "eur", "tx-7")
    assert provider.ledger() == ledger["by_key"]
    # Committed once, while the first request was being answered; the replay did not move it.
    assert list(ledger["committed_at"]) == ["paid"]
    assert sent_at <= ledger["committed_at"]["paid"] <= answered_at
