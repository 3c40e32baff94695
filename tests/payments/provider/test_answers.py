"""What a provider answer proves (issue 18, finding 3): absence only from the provider's typed
"no such charge", over real HTTP against the fake provider."""

from __future__ import annotations

import email.utils
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments import provider
from payments.models import Transaction
from payments.provider import misconfiguration
from payments.provider.answers import parse_retry_after
from payments.provider.interface import Cause, Outcome, ProviderResult

OPERATOR_TOKEN = "answers-tests-operator-token-0123"


def charge(
    key: str, amount: int = 1999, currency: str = "USD", reference: str | None = None
) -> ProviderResult:
    return provider.get_client().charge(
        provider_key=key,
        amount=amount,
        currency=currency,
        source="tok_visa",
        reference=reference or key,
        description="",
    )


def lookup(key: str) -> ProviderResult:
    return provider.get_client().lookup(provider_key=key)


@pytest.fixture(autouse=True)
def forget_refusals() -> Iterator[None]:
    yield
    misconfiguration.clear()  # process-wide: a refusal noted here must not fail later tests' /health/


@pytest.fixture
def charged_key(fake_provider: FakeProvider) -> str:
    key = f"charged-{uuid.uuid4()}"
    assert charge(key).outcome == Outcome.SUCCEEDED
    return key


def test_the_providers_typed_no_such_charge_is_not_found(fake_provider: FakeProvider) -> None:
    result = lookup(f"never-sent-{uuid.uuid4()}")

    assert (result.outcome, result.code, result.http_status) == (
        Outcome.NOT_FOUND,
        Cause.NOT_FOUND.value,
        404,
    )


@pytest.mark.parametrize("on_a_charged_key", [True, False])
def test_a_proxys_html_404_to_a_lookup_is_unknown_never_not_found(
    fake_provider: FakeProvider, on_a_charged_key: bool
) -> None:
    key = f"html-404-{uuid.uuid4()}"
    if on_a_charged_key:
        assert charge(key).outcome == Outcome.SUCCEEDED
    fake_provider.inject({"kind": "proxy_404", "on": "lookup"})

    result = lookup(key)

    assert (result.outcome, result.code, result.http_status) == (Outcome.UNKNOWN, Cause.UNUSABLE.value, 404)
    assert fake_provider.faults_applied() == [("proxy_404", "lookup", key)]


def test_a_404_from_a_route_that_is_not_the_lookup_is_unknown(
    fake_provider: FakeProvider, settings: Any, charged_key: str
) -> None:
    # A wrong path: the server's own "unrecognized URL" 404 is JSON, but not the typed answer.
    settings.PAYMENT_SERVICE_URL = fake_provider.url.replace("/v1/charges", "/v2/charges")

    result = lookup(charged_key)

    assert (result.outcome, result.http_status) == (Outcome.UNKNOWN, 404)
    assert fake_provider.charge_count(charged_key) == 1


def test_a_redirected_lookup_is_not_followed_and_is_unknown(
    fake_provider: FakeProvider, charged_key: str
) -> None:
    # The redirect points at a lookup that would answer the typed 404 for another key.
    fake_provider.inject({"kind": "redirect", "on": "lookup"})

    result = lookup(charged_key)

    assert (result.outcome, result.code, result.http_status) == (Outcome.UNKNOWN, Cause.UNUSABLE.value, 302)
    assert [a.outcome for a in result.attempts] == [Cause.UNUSABLE.value], "one attempt: nothing followed"


def test_a_redirected_charge_is_not_followed_and_is_unknown(fake_provider: FakeProvider) -> None:
    key = f"redirected-{uuid.uuid4()}"
    fake_provider.inject({"kind": "redirect"})

    result = charge(key)

    assert (result.outcome, result.code, result.http_status) == (Outcome.UNKNOWN, Cause.UNUSABLE.value, 302)


@pytest.mark.parametrize("route_error", ["proxy_404", "wrong_path"])
def test_a_404_on_the_charge_route_is_misconfigured(
    fake_provider: FakeProvider, settings: Any, route_error: str
) -> None:
    if route_error == "proxy_404":
        fake_provider.inject({"kind": "proxy_404"})
    else:
        settings.PAYMENT_SERVICE_URL = fake_provider.url.replace("/v1/charges", "/v1/charge")

    result = charge(f"route-{uuid.uuid4()}")

    assert (result.outcome, result.code, result.http_status) == (
        Outcome.MISCONFIGURED,
        Cause.MISCONFIGURED.value,
        404,
    )
    assert fake_provider.total_charges() == 0


def test_a_charge_route_404_answers_503_keeps_nothing_and_fails_health(
    api: APIClient, client: Client, settings: Any, fake_provider: FakeProvider
) -> None:
    """What README promises for a route error: 503 provider_misconfigured, nothing kept, an alarm."""
    settings.METRICS_TOKEN = OPERATOR_TOKEN
    fake_provider.inject({"kind": "proxy_404"})

    response = api.post(
        "/api/v1/charges",
        {"amount": 1999, "currency": "USD", "source": "tok_visa"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="route-error",
    )

    assert response.status_code == 503, response.content[:300]
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("provider_unavailable", "provider_misconfigured")
    assert Transaction.objects.count() == 0, "nothing is kept"
    health = client.get("/health/", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert health.status_code == 503
    assert health.json()["checks"]["payment-provider:credentials"][0]["observedValue"] == 404


# Mismatch (issue 18, finding 5): an answer for another amount, currency or key --------------


def test_a_charge_answered_for_another_amount_and_currency_is_a_success_flagged_as_a_mismatch(
    fake_provider: FakeProvider,
) -> None:
    key = f"other-amount-{uuid.uuid4()}"
    fake_provider.inject({"kind": "other_charge", "variant": "all", "key": key})
    fake_provider.inject({"kind": "other_charge", "variant": "amount"})
    fake_provider.inject({"kind": "other_charge", "variant": "currency"})

    result = charge(key)
    amount_only = charge(f"amount-{uuid.uuid4()}")
    currency_only = charge(f"currency-{uuid.uuid4()}")

    assert result.outcome == Outcome.SUCCEEDED and result.charge_id, "the provider's success is a fact"
    assert result.mismatch.startswith("amount 1 JPY, asked 1999 USD")
    assert "idempotency key another-" in result.mismatch and "reference another-charge" in result.mismatch
    assert amount_only.mismatch == "amount 1 USD, asked 1999 USD"
    assert currency_only.mismatch == "amount 1999 JPY, asked 1999 USD"


def test_a_matching_answer_has_no_mismatch_whatever_the_currencys_case(fake_provider: FakeProvider) -> None:
    result = provider.get_client().charge(
        provider_key=f"match-{uuid.uuid4()}",
        amount=1999,
        currency="usd",
        source="tok_visa",
        reference="tx-1",
        description="",
    )

    assert (result.outcome, result.mismatch) == (Outcome.SUCCEEDED, "")


def test_a_lookup_answered_for_another_key_is_unknown(fake_provider: FakeProvider, charged_key: str) -> None:
    fake_provider.inject({"kind": "other_charge", "variant": "key", "on": "lookup"})

    result = provider.get_client().lookup(provider_key=charged_key, reference=charged_key)

    assert (result.outcome, result.code) == (Outcome.UNKNOWN, Cause.UNUSABLE.value), "not our charge"
    assert result.mismatch.startswith("idempotency key another-")
    assert f"reference another-charge, asked {charged_key}" in result.mismatch


def test_a_lookup_of_our_charge_for_another_amount_is_a_success_flagged_as_a_mismatch(
    fake_provider: FakeProvider, charged_key: str
) -> None:
    fake_provider.inject({"kind": "other_charge", "variant": "amount", "on": "lookup"})

    flagged = provider.get_client().lookup(provider_key=charged_key, amount=1999, currency="USD")
    plain = provider.get_client().lookup(provider_key=charged_key, amount=1999, currency="USD")

    assert (flagged.outcome, flagged.mismatch) == (Outcome.SUCCEEDED, "amount 1 USD, asked 1999 USD")
    assert (plain.outcome, plain.mismatch) == (Outcome.SUCCEEDED, "")


# Retry-After (issue 18: a 500 with `Retry-After: ²` was a 500 with the row left pending) -------

JUNK_RETRY_AFTERS = ["²", "¹²", "1.5", "-1", "soon", "Wed, 99 Foo 2015 07:28:00 GMT", "9" * 40]


@pytest.mark.parametrize("junk", JUNK_RETRY_AFTERS)
def test_a_5xx_with_a_junk_retry_after_is_a_provider_error_without_a_wait(
    fake_provider: FakeProvider, settings: Any, junk: str
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    fake_provider.inject({"kind": "status", "status": 500, "retry_after": junk})

    result = charge(f"junk-retry-after-{uuid.uuid4()}")

    assert (result.outcome, result.code, result.http_status) == (
        Outcome.PROVIDER_ERROR,
        "provider_error",
        500,
    )
    assert result.retry_after_s == (3600 if junk == "9" * 40 else 0)


def test_a_retried_503_with_a_junk_retry_after_backs_off_and_tries_again(fake_provider: FakeProvider) -> None:
    key = f"junk-503-{uuid.uuid4()}"
    fake_provider.inject({"kind": "status", "status": 503, "retry_after": "²", "key": key})

    result = charge(key)

    assert result.outcome == Outcome.SUCCEEDED
    assert [a.outcome for a in result.attempts] == [Cause.PROVIDER_ERROR.value, Cause.SUCCEEDED.value]
    assert fake_provider.charge_count(key) == 1


def test_the_api_answers_a_provider_500_with_a_junk_retry_after_as_retry_scheduled(
    api: APIClient, settings: Any, fake_provider: FakeProvider
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    fake_provider.inject({"kind": "status", "status": 500, "retry_after": "²"})

    response = api.post(
        "/api/v1/charges",
        {"amount": 1999, "currency": "USD", "source": "tok_visa"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="superscript",
    )

    assert response.status_code == 502, response.content[:300]
    assert response.json()["error"]["code"] == "provider_error"
    assert Transaction.objects.get(idempotency_key="superscript").status == Transaction.Status.FAILED


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120),
        (" 7\t", 7),
        ("0", 0),
        ("86400", 3600),  # clamped
        ("9" * 5000, 3600),  # int() of it would raise
        ("0007", 7),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0),  # a date in the past: now
        (None, None),
        ("", None),
        ("²", None),
        ("12abc", None),
    ],
)
def test_parse_retry_after_reads_ascii_seconds_and_http_dates_only(
    value: str | None, seconds: int | None
) -> None:
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_reads_a_future_http_date_as_the_seconds_until_it() -> None:
    in_a_minute = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)

    assert 55 <= (parse_retry_after(in_a_minute) or 0) <= 60
