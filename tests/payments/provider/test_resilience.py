from __future__ import annotations

import io
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments import failpoints, provider
from payments.models import Transaction
from payments.provider.resilience import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    CircuitBreaker,
    CircuitOpen,
    ProviderBusy,
    Resilience,
)
from tests.support.service import TEST_API_KEY

CHARGE = {"amount": 1999, "currency": "USD", "source": "tok_visa"}
# /health/ shows its detail (the breaker's state) to an operator sending METRICS_TOKEN.
OPERATOR_TOKEN = "breaker-tests-operator-token-0123"


def charge(api: APIClient, key: str, source: str = "tok_visa") -> Any:
    return api.post("/api/v1/charges", {**CHARGE, "source": source}, format="json", HTTP_IDEMPOTENCY_KEY=key)


def get_health(client: Client) -> tuple[int, dict[str, Any]]:
    response = client.get("/health/", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    return response.status_code, response.json()


def circuit(client: Client) -> dict[str, Any]:
    return get_health(client)[1]["checks"]["payment-provider:circuit"][0]


def assert_refused_writing_nothing(response: Any, code: str) -> None:
    assert response.status_code == 503
    body = response.json()
    assert (body["error"]["type"], body["error"]["code"]) == ("provider_unavailable", code)
    assert body["error"]["retryable"] is True and body["error"]["request_id"]
    assert body["transaction"] is None
    assert int(response["Retry-After"]) >= 1


@pytest.fixture
def breaker_settings(settings: Any) -> Any:
    settings.METRICS_TOKEN = OPERATOR_TOKEN
    settings.PAYMENT_BREAKER_FAILURES = 3
    settings.PAYMENT_BREAKER_RESET_S = 1
    settings.PAYMENT_MAX_RETRIES = 0
    return settings


# What the caller is told for each failing test card: not charged (retry scheduled), or unknown.
FAILURE_STATUS = {"tok_error": 502, "tok_timeout": 504}


def open_breaker(api: APIClient, source: str = "tok_error", failures: int = 3) -> None:
    for number in range(failures):
        assert charge(api, f"failing-{number}", source).status_code == FAILURE_STATUS[source]


@pytest.mark.parametrize("failing_source", ["tok_error", "tok_timeout"])
def test_breaker_opens_after_n_failures_and_rejects_with_503_writing_nothing(
    api: APIClient, client: Client, breaker_settings: Any, fake_provider: FakeProvider, failing_source: str
) -> None:
    breaker_settings.PAYMENT_BREAKER_RESET_S = 30
    open_breaker(api, failing_source)
    rows_before = set(Transaction.objects.values_list("pk", "status", "updated_at"))
    charges_before = fake_provider.total_charges()

    rejected = charge(api, "while-open")

    assert_refused_writing_nothing(rejected, "circuit_open")
    assert 1 <= int(rejected["Retry-After"]) <= 30
    assert set(Transaction.objects.values_list("pk", "status", "updated_at")) == rows_before, (
        "nothing is recorded while the circuit is open"
    )
    assert not Transaction.objects.filter(idempotency_key="while-open").exists()
    assert fake_provider.total_charges() == charges_before
    state = circuit(client)
    assert (state["status"], state["observedValue"], state["consecutive_failures"]) == ("fail", "open", 3)


def test_health_shows_the_breaker_only_to_an_operator(
    client: Client, breaker_settings: Any, transactional_db: None
) -> None:
    anonymous = client.get("/health/")
    wrong = client.get("/health/", headers={"Authorization": "Bearer not-the-operator-token"})

    assert "checks" not in anonymous.json()
    assert wrong.status_code == 401
    assert circuit(client)["observedValue"] == "closed"


def test_breaker_opening_between_the_pre_check_and_the_call_writes_nothing(
    api: APIClient, breaker_settings: Any, fake_provider: FakeProvider
) -> None:
    """Another request's failure opens the breaker after this one passed the pre-check: it is
    refused at the call, and no row is left that retry_failed_payments would charge later."""
    breaker = provider.get_client().breaker

    def others_fail() -> None:
        for _ in range(breaker_settings.PAYMENT_BREAKER_FAILURES):
            breaker.record_failure()

    with failpoints.armed("charge.before_call", failpoints.once(others_fail)):
        refused = charge(api, "raced")

    assert_refused_writing_nothing(refused, "circuit_open")
    assert Transaction.objects.count() == 0
    assert fake_provider.total_charges() == 0
    breaker.reset()  # the provider is back
    stdout = io.StringIO()
    call_command("retry_failed_payments", "--json", stdout=stdout, stderr=io.StringIO())
    assert json.loads(stdout.getvalue())["total"] == 0
    assert fake_provider.total_charges() == 0


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


def test_provider_4xx_answers_never_open_the_breaker(
    api: APIClient, client: Client, breaker_settings: Any, fake_provider: FakeProvider
) -> None:
    breaker_settings.PAYMENT_API_KEY = "sk_wrong_key"
    for number in range(4):
        assert_refused_writing_nothing(charge(api, f"unauthorized-{number}"), "provider_misconfigured")

    status, health = get_health(client)
    assert (status, health["status"]) == (503, "fail"), "a refused key is an operator alarm"
    assert health["checks"]["payment-provider:credentials"][0]["observedValue"] == 401

    snapshot = provider.get_client().breaker.snapshot()
    assert (snapshot.state, snapshot.consecutive_failures, snapshot.opened_total) == ("closed", 0, 0)
    assert Transaction.objects.count() == 0, "a charge refused for our credentials is not kept"
    breaker_settings.PAYMENT_API_KEY = TEST_API_KEY
    assert charge(api, "unauthorized-0").status_code == 201, "the same key works once the key is fixed"
    assert fake_provider.total_charges() == 1
    assert get_health(client)[1]["checks"]["payment-provider:credentials"][0]["status"] == "pass"


def test_a_recursion_error_in_the_trial_answer_does_not_keep_the_breaker_half_open(
    api: APIClient, client: Client, breaker_settings: Any, fake_provider: FakeProvider
) -> None:
    open_breaker(api)
    time.sleep(breaker_settings.PAYMENT_BREAKER_RESET_S + 0.1)
    fake_provider.inject({"kind": "garbage", "variant": "deep_json"})  # [ × 50 000: RecursionError

    trial = charge(api, "deep-answer")

    assert trial.status_code == 504, trial.content[:300]
    error = trial.json()["error"]
    assert (error["type"], error["code"]) == ("outcome_unknown", "unusable_answer")
    row = Transaction.objects.get(idempotency_key="deep-answer")
    assert row.status == Transaction.Status.UNKNOWN
    assert fake_provider.charge_count(row.provider_idempotency_key) == 1, "the provider did charge it"
    snapshot = provider.get_client().breaker.snapshot()
    assert (snapshot.state, snapshot.opened_total) == ("open", 2), "the failed trial reopens it"
    time.sleep(breaker_settings.PAYMENT_BREAKER_RESET_S + 0.1)
    assert charge(api, "after-deep-answer").status_code == 201, "the next trial is let through"
    assert circuit(client)["observedValue"] == "closed"


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


# The breaker and the bulkhead on their own, with a clock the test moves: no provider, no sleeps.


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def fresh_breaker(clock: FakeClock, *, failures: int = 3, reset_s: float = 30) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=failures, reset_timeout_s=reset_s, clock=clock)


def opened(clock: FakeClock, **options: Any) -> CircuitBreaker:
    breaker = fresh_breaker(clock, **options)
    for _ in range(breaker.failure_threshold):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.snapshot().state == OPEN
    return breaker


def test_the_breaker_stays_closed_below_the_threshold_and_a_success_clears_the_count(
    clock: FakeClock,
) -> None:
    breaker = fresh_breaker(clock)

    breaker.record_failure()
    breaker.record_failure()
    assert (breaker.snapshot().state, breaker.snapshot().consecutive_failures) == (CLOSED, 2)
    breaker.check()
    breaker.before_call()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()

    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.consecutive_failures, snapshot.opened_total) == (CLOSED, 2, 0)


def test_the_breaker_opens_at_the_threshold_and_refuses_until_the_reset_time(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="payments.provider.resilience"):
        breaker = opened(clock, reset_s=30)

    assert [record.event for record in caplog.records] == ["breaker.opened"]
    snapshot = breaker.snapshot()
    assert (snapshot.consecutive_failures, snapshot.retry_after_s, snapshot.opened_total) == (3, 30, 1)
    clock.advance(29.9)
    with pytest.raises(CircuitOpen) as refused_check:
        breaker.check()
    with pytest.raises(CircuitOpen) as refused_call:
        breaker.before_call()
    assert refused_check.value.retry_after_s == refused_call.value.retry_after_s == 1
    assert breaker.snapshot().state == OPEN


@pytest.mark.parametrize(("elapsed_s", "retry_after_s"), [(0, 30), (0.5, 30), (1, 29), (28.5, 2), (29.99, 1)])
def test_retry_after_is_the_time_left_open_rounded_up_to_a_whole_second(
    clock: FakeClock, elapsed_s: float, retry_after_s: int
) -> None:
    breaker = opened(clock, reset_s=30)
    clock.advance(elapsed_s)

    with pytest.raises(CircuitOpen) as refused:
        breaker.check()
    assert refused.value.retry_after_s == retry_after_s
    assert breaker.snapshot().retry_after_s == retry_after_s


def test_after_the_reset_time_the_breaker_half_opens_and_lets_one_trial_through(clock: FakeClock) -> None:
    breaker = opened(clock, reset_s=30)
    clock.advance(30)

    assert (breaker.snapshot().state, breaker.snapshot().retry_after_s) == (HALF_OPEN, 0)
    breaker.check()  # claims nothing: the trial is still free
    breaker.check()
    breaker.before_call()  # the trial
    with pytest.raises(CircuitOpen) as second_call:
        breaker.before_call()
    with pytest.raises(CircuitOpen) as second_check:
        breaker.check()
    assert second_call.value.retry_after_s == second_check.value.retry_after_s == 1
    assert breaker.snapshot().state == HALF_OPEN


def test_a_successful_trial_closes_the_breaker(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    breaker = opened(clock)
    clock.advance(30)
    breaker.before_call()
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="payments.provider.resilience"):
        breaker.record_success()

    assert [record.event for record in caplog.records] == ["breaker.closed"]
    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.consecutive_failures, snapshot.opened_total) == (CLOSED, 0, 1)
    breaker.before_call()
    breaker.before_call()  # closed: every call is let through


def test_a_failed_trial_reopens_the_breaker_for_a_full_reset_time_from_then(clock: FakeClock) -> None:
    breaker = opened(clock, reset_s=30)
    clock.advance(45)
    breaker.before_call()

    breaker.record_failure()  # one failure is enough while half-open

    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.retry_after_s, snapshot.opened_total) == (OPEN, 30, 2)
    clock.advance(29.9)
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    clock.advance(0.1)
    breaker.before_call()  # the next trial
    assert breaker.snapshot().state == HALF_OPEN


def test_reset_closes_an_open_breaker_and_keeps_the_count_of_openings(clock: FakeClock) -> None:
    breaker = opened(clock)

    breaker.reset()

    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.consecutive_failures, snapshot.opened_total) == (CLOSED, 0, 1)
    breaker.check()


def fresh_resilience(clock: FakeClock, *, slots: int = 2, waiters: int | None = None) -> Resilience:
    return Resilience(
        failure_threshold=2,
        reset_timeout_s=10,
        max_concurrent_calls=slots,
        max_slot_waiters=waiters,
        clock=clock,
    )


def test_guard_counts_an_unwell_answer_and_a_raised_error_as_failures(clock: FakeClock) -> None:
    resilience = fresh_resilience(clock)

    assert resilience.guard(lambda: 503, unwell=lambda status: status >= 500) == 503
    with pytest.raises(ValueError):
        resilience.guard(lambda: int("not a number"), unwell=lambda _: False)

    assert resilience.state() == OPEN
    with pytest.raises(CircuitOpen):
        resilience.guard(lambda: 200, unwell=lambda _: False)
    clock.advance(10)
    assert resilience.state() == HALF_OPEN
    assert resilience.guard(lambda: 200, unwell=lambda status: status >= 500) == 200
    assert resilience.state() == CLOSED


def test_a_trial_that_raises_does_not_leave_the_breaker_half_open_and_claimed(clock: FakeClock) -> None:
    resilience = fresh_resilience(clock)
    for _ in range(2):
        resilience.guard(lambda: 503, unwell=lambda _: True)
    clock.advance(10)

    def answer_too_deep() -> int:
        raise RecursionError("maximum recursion depth exceeded")

    with pytest.raises(RecursionError):
        resilience.guard(answer_too_deep, unwell=lambda _: False)

    assert resilience.state() == OPEN
    clock.advance(10)
    assert resilience.guard(lambda: 200, unwell=lambda _: False) == 200, "the next trial is let through"


def test_the_bulkhead_refuses_a_call_beyond_its_slots_at_once_and_gives_slots_back(clock: FakeClock) -> None:
    resilience = fresh_resilience(clock, slots=2)

    with resilience.call_slot(), resilience.call_slot(), pytest.raises(ProviderBusy), resilience.call_slot():
        pass
    with resilience.call_slot(), resilience.call_slot():
        pass  # both slots are free again, after a refusal too


def test_an_open_breaker_refuses_a_slot_before_taking_one(clock: FakeClock) -> None:
    resilience = fresh_resilience(clock, slots=1)
    for _ in range(2):
        resilience.guard(lambda: 503, unwell=lambda _: True)

    with pytest.raises(CircuitOpen), resilience.call_slot():
        pass
    clock.advance(10)
    with resilience.call_slot():  # the one slot was never taken by the refusal
        resilience.admit()


def test_a_call_that_finds_every_slot_taken_waits_for_one_to_free_giving_back_what_it_holds(
    clock: FakeClock,
) -> None:
    import threading

    resilience = fresh_resilience(clock, slots=1)
    gave_back: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def hold_the_slot() -> None:
        with resilience.call_slot():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_slot)
    holder.start()
    holding.wait(10)
    threading.Timer(0.05, release.set).start()

    with resilience.call_slot(wait_s=10, before_waiting=lambda: gave_back.append("connection")):
        assert gave_back == ["connection"], "it gave its connection back before it waited"
    holder.join(10)


def test_a_wait_that_ends_without_a_slot_is_busy_and_an_immediate_slot_gives_nothing_back(
    clock: FakeClock,
) -> None:
    resilience = fresh_resilience(clock, slots=1)
    gave_back: list[str] = []

    with resilience.call_slot(wait_s=10, before_waiting=lambda: gave_back.append("x")):
        assert gave_back == [], "a free slot: nothing to give back, no wait"
        with pytest.raises(ProviderBusy), resilience.call_slot(wait_s=0.01):
            pass
        with pytest.raises(ProviderBusy), resilience.call_slot():
            pass  # wait_s 0: at once, as before
    with resilience.call_slot():
        pass  # the slot is free again


def test_with_the_waiters_cap_reached_a_call_is_busy_at_once_and_a_waiter_leaving_frees_its_place(
    clock: FakeClock,
) -> None:
    import threading

    resilience = fresh_resilience(clock, slots=1, waiters=1)
    holding, waiting, release = threading.Event(), threading.Event(), threading.Event()
    waiter_result: list[str] = []

    def hold_the_slot() -> None:
        with resilience.call_slot():
            holding.set()
            release.wait(10)

    def wait_for_a_slot() -> None:
        try:
            with resilience.call_slot(wait_s=10, before_waiting=waiting.set):
                waiter_result.append("slot")
        except ProviderBusy:
            waiter_result.append("busy")

    holder = threading.Thread(target=hold_the_slot)
    holder.start()
    holding.wait(10)
    waiter = threading.Thread(target=wait_for_a_slot)
    waiter.start()
    waiting.wait(10)  # the one waiter's place is taken

    gave_back: list[str] = []
    with (
        pytest.raises(ProviderBusy),
        resilience.call_slot(wait_s=10, before_waiting=lambda: gave_back.append("x")),
    ):
        pass
    assert gave_back == [], "refused without waiting: the waiters' cap was reached"

    release.set()
    holder.join(10)
    waiter.join(10)
    assert waiter_result == ["slot"], "the waiter got the slot the holder freed"
    assert not holder.is_alive() and not waiter.is_alive()
    with resilience.call_slot(wait_s=0.01, before_waiting=lambda: gave_back.append("y")):
        pass  # the slot and the waiter's place are both free again
    assert gave_back == []
