"""Every HTTP attempt has a hard wall-clock bound: its socket is closed at the deadline whatever
the peer sends (issue 18, finding 1: a trickled answer kept one attempt open for ever)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from fakeprovider import FakeProvider
from payments import provider
from payments.provider.http import CUT_AT_DEADLINE, HttpProvider
from payments.provider.interface import Cause, Outcome, ProviderResult

# Every gap between two bytes is shorter than the read timeout (300 ms in tests/conftest.py), so
# only a bound on the whole attempt stops it; the whole answer would take well over 10 s.
TRICKLE_MS = 40


def charge(key: str) -> ProviderResult:
    return provider.get_client().charge(
        provider_key=key, amount=1999, currency="USD", source="tok_visa", reference=key, description=""
    )


def wait_until(condition: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    """Poll for something the fake provider does after the client has moved on."""
    give_up_at = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > give_up_at:
            raise AssertionError("condition not met")
        time.sleep(0.02)
    return value


def hung_up_trickles(fake: FakeProvider) -> list[dict[str, Any]]:
    return [entry for entry in fake.trickles() if entry["hung_up"]]


@pytest.fixture
def no_retries(settings: Any) -> Any:
    settings.PAYMENT_MAX_RETRIES = 0
    return settings


def test_a_trickled_charge_answer_is_cut_at_the_attempt_deadline_and_is_unknown(
    fake_provider: FakeProvider, no_retries: Any
) -> None:
    key = f"trickle-{uuid.uuid4()}"
    fake_provider.inject({"kind": "trickle", "ms": TRICKLE_MS, "key": key})

    result = charge(key)

    assert (result.outcome, result.code) == (Outcome.UNKNOWN, Cause.TIMEOUT.value), "it may have charged"
    assert [(a.outcome, a.message) for a in result.attempts] == [(Cause.TIMEOUT.value, CUT_AT_DEADLINE)]
    assert result.reached_provider
    assert fake_provider.charge_count(key) == 1, "the provider did charge: unknown was the truth"
    [trickle] = wait_until(lambda: hung_up_trickles(fake_provider))
    assert trickle["sent"] < trickle["total"], "the client closed the socket before the answer was out"


def test_a_trickled_lookup_answer_is_cut_and_proves_nothing(
    fake_provider: FakeProvider, no_retries: Any
) -> None:
    key = f"trickle-lookup-{uuid.uuid4()}"
    assert charge(key).outcome == Outcome.SUCCEEDED
    fake_provider.inject({"kind": "trickle", "ms": TRICKLE_MS, "on": "lookup", "key": key})

    result = provider.get_client().lookup(provider_key=key)

    assert (result.outcome, result.code) == (Outcome.UNKNOWN, Cause.TIMEOUT.value)
    [trickle] = wait_until(lambda: hung_up_trickles(fake_provider))
    assert trickle["sent"] < trickle["total"]


def test_after_a_cut_attempt_the_retry_gets_the_charge_that_was_made(fake_provider: FakeProvider) -> None:
    key = f"trickle-retry-{uuid.uuid4()}"
    fake_provider.inject({"kind": "trickle", "ms": TRICKLE_MS, "key": key})

    result = charge(key)

    assert result.outcome == Outcome.SUCCEEDED and result.charge_id
    assert [a.outcome for a in result.attempts] == [Cause.TIMEOUT.value, Cause.SUCCEEDED.value]
    assert fake_provider.charge_count(key) == 1


def test_a_connection_cut_at_its_deadline_is_never_reused(
    fake_provider: FakeProvider, no_retries: Any
) -> None:
    cut_key, next_key = f"cut-{uuid.uuid4()}", f"next-{uuid.uuid4()}"
    fake_provider.inject({"kind": "trickle", "ms": TRICKLE_MS, "key": cut_key})
    assert charge(cut_key).code == Cause.TIMEOUT.value

    following = [charge(f"{next_key}-{number}") for number in range(3)]

    assert [r.outcome for r in following] == [Outcome.SUCCEEDED] * 3
    assert all(len(r.attempts) == 1 for r in following), "no attempt failed on a dead socket"


def test_answers_within_the_bound_are_never_cut(fake_provider: FakeProvider, no_retries: Any) -> None:
    fake_provider.inject({"kind": "hold", "ms": 150})  # slower than most, within the read timeout

    results = [charge(f"quick-{uuid.uuid4()}") for _ in range(5)]

    assert [r.outcome for r in results] == [Outcome.SUCCEEDED] * 5


def test_the_bounds_settlement_derives_its_window_from(settings: Any) -> None:
    settings.PAYMENT_CONNECT_TIMEOUT_MS, settings.PAYMENT_TIMEOUT_MS = 250, 700
    settings.PAYMENT_DEADLINE_MS = 3000
    settings.PAYMENT_PROVIDER_ALLOWANCE_S = 45
    client = provider.get_client()

    assert isinstance(client, HttpProvider)
    assert client.attempt_deadline_s() == pytest.approx(0.95)
    assert client.call_deadline_s() == pytest.approx(3.95)
    assert provider.in_flight_window_s() == pytest.approx(48.95)
