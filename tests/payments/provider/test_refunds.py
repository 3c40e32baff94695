"""The HTTP adapter's refunds (issue 19): what each refund answer proves, row by row of
docs/provider.md, over real HTTP against the fake provider."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from fakeprovider import FakeProvider
from payments import provider
from payments.provider import misconfiguration
from payments.provider.interface import Cause, Outcome, ProviderResult
from tests.support.network import closed_port

CHARGED = 1000


@pytest.fixture(autouse=True)
def forget_refusals() -> Iterator[None]:
    yield
    misconfiguration.clear()  # process-wide: a refusal noted here must not fail later tests' /health/


def charge(key: str, source: str = "tok_visa") -> ProviderResult:
    return provider.get_client().charge(
        provider_key=key, amount=CHARGED, currency="EUR", source=source, reference=key, description=""
    )


def refund(charge_key: str, refund_key: str, amount: int = 400, charge_id: str = "") -> ProviderResult:
    return provider.get_client().refund(
        charge_key=charge_key, refund_key=refund_key, amount=amount, charge_id=charge_id
    )


def refund_lookup(
    charge_key: str, refund_key: str, amount: int | None = None, charge_id: str = ""
) -> ProviderResult:
    return provider.get_client().refund_lookup(
        charge_key=charge_key, refund_key=refund_key, amount=amount, charge_id=charge_id
    )


def outcome_of(result: ProviderResult) -> tuple[Outcome, str, int | None]:
    return result.outcome, result.code, result.http_status


def causes(result: ProviderResult) -> list[str]:
    return [attempt.outcome for attempt in result.attempts]


@pytest.fixture
def charged(fake_provider: FakeProvider) -> tuple[str, str]:
    """A succeeded charge: (its provider key, its provider id)."""
    key = f"charged-{uuid.uuid4()}"
    result = charge(key)
    assert result.outcome == Outcome.SUCCEEDED
    return key, result.charge_id


@pytest.fixture
def refund_key() -> str:
    return f"refund-{uuid.uuid4()}"


def test_a_succeeded_refund_is_succeeded_with_its_ids(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str
) -> None:
    charge_key, charge_id = charged

    result = refund(charge_key, refund_key, charge_id=charge_id)

    assert outcome_of(result) == (Outcome.SUCCEEDED, Cause.SUCCEEDED.value, 200)
    made = fake_provider.refund_ledger()[charge_key][refund_key]
    assert (result.refund_id, result.charge_id) == (made["id"], charge_id)
    assert result.refund_id.startswith("re_") and result.mismatch == ""
    assert causes(result) == ["succeeded"] and result.reached_provider
    assert refund(charge_key, refund_key, charge_id=charge_id).refund_id == made["id"], (
        "the same key: the same refund"
    )
    assert fake_provider.refund_count(refund_key) == 1


def test_a_failed_refund_is_declined_with_its_reason(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str
) -> None:
    fake_provider.inject({"kind": "refund_failed", "on": "refund"})

    result = refund(charged[0], refund_key)

    assert outcome_of(result) == (Outcome.DECLINED, "expired_or_canceled_card", 200)
    assert result.refund_id and causes(result) == ["declined"] and not result.charged


def test_a_pending_refund_is_pending_until_a_lookup_finds_it_settled(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str
) -> None:
    charge_key, charge_id = charged
    fake_provider.inject({"kind": "refund_pending", "on": "refund", "ms": 600_000})

    made = refund(charge_key, refund_key, charge_id=charge_id)
    still = refund_lookup(charge_key, refund_key, amount=400, charge_id=charge_id)
    fake_provider.settle_refund(refund_key)
    settled = refund_lookup(charge_key, refund_key, amount=400, charge_id=charge_id)

    assert outcome_of(made) == (Outcome.PENDING, Cause.PENDING.value, 200) and causes(made) == ["pending"]
    assert outcome_of(still) == (Outcome.PENDING, Cause.PENDING.value, 200)
    assert outcome_of(settled) == (Outcome.SUCCEEDED, Cause.SUCCEEDED.value, 200)
    assert made.refund_id == still.refund_id == settled.refund_id
    assert len(made.attempts) == 1, "pending is definitive: not retried"


def test_a_pending_refund_that_fails_is_declined_on_lookup(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str
) -> None:
    fake_provider.inject({"kind": "refund_pending", "on": "refund", "ms": 600_000, "variant": "failed"})
    assert refund(charged[0], refund_key).outcome == Outcome.PENDING
    fake_provider.settle_refund(refund_key)

    assert refund_lookup(charged[0], refund_key).outcome == Outcome.DECLINED


def test_a_refund_lookup_finds_the_refund_or_the_typed_no_such_refund(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str
) -> None:
    other_key = f"{charged[0]}-other"
    assert charge(other_key).outcome == Outcome.SUCCEEDED
    made = refund(charged[0], refund_key)

    found = refund_lookup(charged[0], refund_key, amount=400)
    never = refund_lookup(charged[0], f"never-{uuid.uuid4()}")
    under_another_charge = refund_lookup(other_key, refund_key)

    assert outcome_of(found) == (Outcome.SUCCEEDED, Cause.SUCCEEDED.value, 200)
    assert (found.refund_id, found.charge_id) == (made.refund_id, made.charge_id)
    for missing in (never, under_another_charge):
        assert outcome_of(missing) == (Outcome.NOT_FOUND, Cause.NOT_FOUND.value, 404)
        assert missing.message == "no such refund"


def test_a_refund_of_an_unknown_charge_is_not_found_and_refunds_nothing(
    fake_provider: FakeProvider, refund_key: str
) -> None:
    result = refund(f"never-charged-{uuid.uuid4()}", refund_key)

    assert outcome_of(result) == (Outcome.NOT_FOUND, Cause.NOT_FOUND.value, 404)
    assert result.message == "no such charge" and result.refund_id == ""
    assert fake_provider.refund_ledger() == {}


@pytest.mark.parametrize("on", ["refund", "refund_lookup"])
@pytest.mark.parametrize("fault", [{"kind": "proxy_404"}, {"kind": "redirect"}])
def test_a_proxys_404_or_a_redirect_is_unknown_never_not_found(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str, on: str, fault: dict[str, Any]
) -> None:
    """A redirect is not followed: the fake's default target answers resource_missing."""
    if on == "refund_lookup":
        assert refund(charged[0], refund_key).outcome == Outcome.SUCCEEDED
    fake_provider.inject({**fault, "on": on})

    result = refund(charged[0], refund_key) if on == "refund" else refund_lookup(charged[0], refund_key)

    status = 404 if fault["kind"] == "proxy_404" else 302
    assert outcome_of(result) == (Outcome.UNKNOWN, Cause.UNUSABLE.value, status)
    assert fake_provider.faults_applied() == [(fault["kind"], on, refund_key)]


@pytest.mark.parametrize("on", ["refund", "refund_lookup"])
@pytest.mark.parametrize(
    "variant", ["not_json", "long_id", "bad_id", "bad_status", "missing_id", "deep_json", "not_object"]
)
def test_an_unusable_refund_answer_is_unknown(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str, on: str, variant: str
) -> None:
    if on == "refund_lookup":
        assert refund(charged[0], refund_key).outcome == Outcome.SUCCEEDED
    fake_provider.inject({"kind": "garbage", "variant": variant, "on": on})

    result = refund(charged[0], refund_key) if on == "refund" else refund_lookup(charged[0], refund_key)

    assert outcome_of(result) == (Outcome.UNKNOWN, Cause.UNUSABLE.value, 200)
    assert result.refund_id == ""
    assert fake_provider.refund_count(refund_key) == 1, "the provider refunded: that is why it is unknown"


def test_more_than_is_left_is_rejected_with_the_providers_code(
    fake_provider: FakeProvider, charged: tuple[str, str]
) -> None:
    assert refund(charged[0], "first", 700).outcome == Outcome.SUCCEEDED

    result = refund(charged[0], "second", 301)

    assert outcome_of(result) == (Outcome.REJECTED, "amount_exceeds_remaining", 400)
    assert causes(result) == ["rejected"] and result.refund_id == ""
    assert fake_provider.refund_count("second") == 0


def test_a_refund_of_a_declined_charge_is_rejected(fake_provider: FakeProvider, refund_key: str) -> None:
    key = f"declined-{uuid.uuid4()}"
    assert charge(key, source="tok_chargeDeclined").outcome == Outcome.DECLINED

    assert outcome_of(refund(key, refund_key)) == (Outcome.REJECTED, "charge_not_refundable", 400)


def test_a_422_is_rejected(fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str) -> None:
    fake_provider.inject({"kind": "status", "status": 422, "on": "refund"})

    assert refund(charged[0], refund_key).outcome == Outcome.REJECTED
    assert fake_provider.refund_count(refund_key) == 0


def test_the_same_refund_key_with_another_amount_is_unknown(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str
) -> None:
    """The provider holds the key with another request, which may have refunded."""
    assert refund(charged[0], refund_key, 400).outcome == Outcome.SUCCEEDED

    result = refund(charged[0], refund_key, 300)

    assert outcome_of(result) == (Outcome.UNKNOWN, Cause.UNUSABLE.value, 400)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_misconfigured(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str, status: int
) -> None:
    fake_provider.inject({"kind": "status", "status": status, "on": "refund"})

    result = refund(charged[0], refund_key)

    assert outcome_of(result) == (Outcome.MISCONFIGURED, Cause.MISCONFIGURED.value, status)
    assert fake_provider.refund_count(refund_key) == 0


def test_a_wrong_api_key_is_misconfigured_on_both_refund_routes(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str, settings: Any
) -> None:
    settings.PAYMENT_API_KEY = "sk_test_wrong"

    assert refund(charged[0], refund_key).outcome == Outcome.MISCONFIGURED
    assert refund_lookup(charged[0], refund_key).outcome == Outcome.MISCONFIGURED


@pytest.mark.parametrize("on", ["refund", "refund_lookup"])
def test_a_key_in_flight_is_retried_then_unknown(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str, on: str, settings: Any
) -> None:
    attempts = settings.PAYMENT_MAX_RETRIES + 1
    fake_provider.inject_many([{"kind": "status", "status": 409, "on": on}] * attempts)

    result = refund(charged[0], refund_key) if on == "refund" else refund_lookup(charged[0], refund_key)

    assert (result.outcome, result.code) == (Outcome.UNKNOWN, Cause.IN_FLIGHT.value)
    assert causes(result) == ["request_in_flight"] * attempts


def test_a_key_in_flight_then_answered_is_the_answer(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str
) -> None:
    fake_provider.inject({"kind": "status", "status": 409, "on": "refund"})

    result = refund(charged[0], refund_key)

    assert result.outcome == Outcome.SUCCEEDED
    assert causes(result) == ["request_in_flight", "succeeded"]


@pytest.mark.parametrize(("status", "cause"), [(503, "provider_error"), (429, "rate_limited")])
def test_a_5xx_or_429_is_retried_then_a_provider_error(
    fake_provider: FakeProvider,
    charged: tuple[str, str],
    refund_key: str,
    settings: Any,
    status: int,
    cause: str,
) -> None:
    attempts = settings.PAYMENT_MAX_RETRIES + 1
    fake_provider.inject_many([{"kind": "status", "status": status, "on": "refund"}] * attempts)

    result = refund(charged[0], refund_key)

    assert (result.outcome, result.http_status) == (Outcome.PROVIDER_ERROR, status)
    assert causes(result) == [cause] * attempts
    assert fake_provider.refund_count(refund_key) == 0


def test_a_500_is_a_provider_error_at_once(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str
) -> None:
    fake_provider.inject({"kind": "status", "status": 500, "on": "refund_lookup"})

    result = refund_lookup(charged[0], refund_key)

    assert outcome_of(result) == (Outcome.PROVIDER_ERROR, Cause.PROVIDER_ERROR.value, 500)
    assert len(result.attempts) == 1


@pytest.mark.parametrize(
    ("fault", "cause"),
    [({"kind": "hold", "ms": 1500}, "provider_timeout"), ({"kind": "drop_after"}, "connection_dropped")],
)
def test_an_answer_that_never_comes_is_unknown_and_the_provider_refunded_once(
    fake_provider: FakeProvider,
    charged: tuple[str, str],
    refund_key: str,
    settings: Any,
    fault: dict[str, Any],
    cause: str,
) -> None:
    attempts = settings.PAYMENT_MAX_RETRIES + 1
    fake_provider.inject_many([{**fault, "on": "refund"}] * attempts)

    result = refund(charged[0], refund_key)

    assert (result.outcome, result.code) == (Outcome.UNKNOWN, cause)
    assert causes(result) == [cause] * attempts
    assert fake_provider.refund_count(refund_key) == 1
    assert fake_provider.refund_request_count(refund_key) == attempts


def test_unknown_is_sticky_within_a_refund_call(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str, settings: Any
) -> None:
    """After a dropped answer, a 503 proves nothing about the refund the first attempt made."""
    fake_provider.inject_many(
        [{"kind": "drop_after", "on": "refund"}]
        + [{"kind": "status", "status": 503, "on": "refund"}] * settings.PAYMENT_MAX_RETRIES
    )

    result = refund(charged[0], refund_key)

    assert (result.outcome, result.code) == (Outcome.UNKNOWN, Cause.DROPPED.value)
    assert fake_provider.refund_count(refund_key) == 1


def test_a_trickled_answer_is_cut_at_the_attempts_deadline_and_retried_with_the_same_key(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str
) -> None:
    fake_provider.inject({"kind": "trickle", "ms": 50, "on": "refund"})

    result = refund(charged[0], refund_key)

    assert result.outcome == Outcome.SUCCEEDED
    assert causes(result) == ["provider_timeout", "succeeded"]
    assert result.refund_id == fake_provider.refund_ledger()[charged[0]][refund_key]["id"]
    assert fake_provider.refund_count(refund_key) == 1


@pytest.mark.parametrize("on", ["refund", "refund_lookup"])
def test_a_connection_that_never_opens_is_a_connection_error(
    fake_provider: FakeProvider, settings: Any, refund_key: str, on: str
) -> None:
    settings.PAYMENT_SERVICE_URL = f"http://127.0.0.1:{closed_port()}/v1/charges"
    settings.PAYMENT_MAX_RETRIES = 1

    result = refund("some-charge", refund_key) if on == "refund" else refund_lookup("some-charge", refund_key)

    assert (result.outcome, result.code) == (Outcome.CONNECTION_ERROR, Cause.CONNECTION_ERROR.value)
    assert not result.reached_provider


def test_refunds_and_charges_share_the_breaker(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str, settings: Any
) -> None:
    settings.PAYMENT_BREAKER_FAILURES = 2
    settings.PAYMENT_BREAKER_RESET_S = 600
    settings.PAYMENT_MAX_RETRIES = 0
    fake_provider.inject_many([{"kind": "status", "status": 503, "on": "refund"}] * 2)
    assert refund(charged[0], "failing-1").outcome == Outcome.PROVIDER_ERROR
    assert refund(charged[0], "failing-2").outcome == Outcome.PROVIDER_ERROR

    refused = [refund(charged[0], refund_key), refund_lookup(charged[0], refund_key), charge("while-open")]

    assert [result.outcome for result in refused] == [Outcome.UNAVAILABLE] * 3
    assert all(result.attempts == () for result in refused), "nothing was sent"
    assert fake_provider.refund_request_count(refund_key) == 0
    assert fake_provider.request_count("while-open") == 0


def test_a_refund_for_another_amount_or_charge_is_its_outcome_flagged_as_a_mismatch(
    fake_provider: FakeProvider, charged: tuple[str, str]
) -> None:
    charge_key, charge_id = charged
    fake_provider.inject_many(
        [
            {"kind": "other_refund", "variant": "amount", "on": "refund"},
            {"kind": "other_refund", "variant": "charge", "on": "refund"},
            {"kind": "other_refund", "variant": "charge", "on": "refund"},
        ]
    )

    amount = refund(charge_key, "r-amount", 400, charge_id=charge_id)
    other_charge = refund(charge_key, "r-charge", 100, charge_id=charge_id)
    unchecked = refund(charge_key, "r-unchecked", 100)

    assert (amount.outcome, amount.mismatch) == (Outcome.SUCCEEDED, "amount 1, asked 400")
    assert other_charge.outcome == Outcome.SUCCEEDED
    assert other_charge.mismatch.startswith("charge ch_another") and other_charge.mismatch.endswith(
        f"asked {charge_id}"
    )
    assert (unchecked.outcome, unchecked.mismatch) == (Outcome.SUCCEEDED, ""), (
        "no charge id given: not checked"
    )


def test_a_refund_lookup_answered_for_another_charge_is_unknown(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str
) -> None:
    charge_key, charge_id = charged
    assert refund(charge_key, refund_key, charge_id=charge_id).outcome == Outcome.SUCCEEDED
    fake_provider.inject({"kind": "other_refund", "variant": "charge", "on": "refund_lookup"})

    result = refund_lookup(charge_key, refund_key, amount=400, charge_id=charge_id)

    assert outcome_of(result) == (Outcome.UNKNOWN, Cause.UNUSABLE.value, 200)
    assert result.mismatch.startswith("charge ch_another")


def test_a_refund_lookup_of_our_refund_for_another_amount_keeps_its_outcome(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str
) -> None:
    charge_key, charge_id = charged
    assert refund(charge_key, refund_key, charge_id=charge_id).outcome == Outcome.SUCCEEDED
    fake_provider.inject({"kind": "other_refund", "variant": "amount", "on": "refund_lookup"})

    result = refund_lookup(charge_key, refund_key, amount=400, charge_id=charge_id)

    assert (result.outcome, result.mismatch) == (Outcome.SUCCEEDED, "amount 1, asked 400")


def test_keys_are_sent_percent_encoded(fake_provider: FakeProvider) -> None:
    charge_key, refund_key = f"order/{uuid.uuid4()} a", "refund/1 ?x#y"
    assert charge(charge_key).outcome == Outcome.SUCCEEDED

    made = refund(charge_key, refund_key)

    assert made.outcome == Outcome.SUCCEEDED
    assert list(fake_provider.refund_ledger()) == [charge_key]
    assert refund_lookup(charge_key, refund_key).refund_id == made.refund_id


def test_refund_attempts_are_observed_by_kind(
    fake_provider: FakeProvider, charged: tuple[str, str], refund_key: str
) -> None:
    def observed(kind: str, outcome: str) -> float:
        name = "paymentsite_provider_request_duration_seconds_count"
        return REGISTRY.get_sample_value(name, {"kind": kind, "outcome": outcome}) or 0.0

    before = observed("refund", "pending"), observed("refund_lookup", "not_found")
    fake_provider.inject({"kind": "refund_pending", "on": "refund", "ms": 600_000})
    refund(charged[0], refund_key)
    refund_lookup(charged[0], f"never-{uuid.uuid4()}")

    assert (observed("refund", "pending"), observed("refund_lookup", "not_found")) == (
        before[0] + 1,
        before[1] + 1,
    )
