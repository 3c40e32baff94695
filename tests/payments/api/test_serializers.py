"""The charge request: what validation refuses is what the schema refuses, before anything is
written or sent."""

from __future__ import annotations

import re
from typing import Any

import pytest
from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments.models import Transaction
from tests.payments.api.helpers import charge, error_of


def matches(pattern: str, text: str) -> bool:
    """As JSON Schema's (ECMA 262) regular expressions match: `$` is the end, never before a
    trailing newline as in Python's `re.search`."""
    assert pattern.startswith("^") and pattern.endswith("$")
    return re.fullmatch(pattern[1:-1], text) is not None


def request_schema(api: APIClient) -> dict[str, Any]:
    schema = api.get("/api/schema/?format=json").json()
    return schema["components"]["schemas"]["ChargeCreateRequest"]["properties"]


# Each of these the provider can never accept: its contract takes `tok_…` tokens only.
NOT_TOKENS = [
    "card_4242abcd",
    "4242424242424242",
    "tok_",
    "TOK_visa",
    "xtok_visa",
    "tok_visa card",
    "tok_visa\n",
]


@pytest.mark.parametrize("source", NOT_TOKENS)
def test_a_source_the_provider_cannot_accept_is_refused_before_it_is_sent(
    api: APIClient, fake_provider: FakeProvider, source: str
) -> None:
    response = charge(api, source=source)

    assert "source" in error_of(response, 400, "invalid_request")["error"]["fields"]
    assert Transaction.objects.count() == 0
    assert fake_provider.total_charges() == 0


@pytest.mark.parametrize("source", NOT_TOKENS)
def test_the_schema_refuses_the_same_sources(api: APIClient, source: str) -> None:
    pattern = request_schema(api)["source"]["pattern"]

    assert not matches(pattern, source)


@pytest.mark.parametrize("source", ["tok_visa", "tok_chargeDeclined", "tok_a", "tok_" + "x" * 251])
def test_the_schema_admits_tokens(api: APIClient, source: str) -> None:
    source_schema = request_schema(api)["source"]

    assert matches(source_schema["pattern"], source)
    assert len(source) <= source_schema["maxLength"]
