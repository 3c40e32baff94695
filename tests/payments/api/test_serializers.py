"""The charge request: what validation refuses is what the schema refuses, before anything is
written or sent."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments.models import Transaction
from tests.support.api import CHARGE, charge, error_of


def matches(pattern: str, text: str) -> bool:
    """As JSON Schema's (ECMA 262) regular expressions match: `$` is the end, never before a
    trailing newline as in Python's `re.search`."""
    assert pattern.startswith("^") and pattern.endswith("$")
    return re.fullmatch(pattern[1:-1], text) is not None


def request_schema_components(api: APIClient) -> dict[str, Any]:
    return api.get("/api/schema/?format=json").json()["components"]["schemas"]


def request_schema(api: APIClient) -> dict[str, Any]:
    return request_schema_components(api)["ChargeCreateRequest"]["properties"]


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


def metadata_schema_admits(api: APIClient, metadata: Any) -> bool:
    return OAS31Validator(request_schema(api)["metadata"]).is_valid(metadata)


WITHIN = [
    {f"key{i:02}": "v" * 500 for i in range(20)},  # 20 keys, each value at its longest: over 4 KiB in all
    {"k" * 40: None, "n": -1.5, "big": 2**63, "yes": True, "": ""},
]
BEYOND = [
    ({f"k{i}": "v" for i in range(21)}, "21 keys"),
    ({"k" * 41: "v"}, "a 41-character key"),
    ({"k": "v" * 501}, "a 501-character value"),
    ({"k": 10**309}, "a number no double holds"),
    ({"k": {"nested": 1}}, "an object value"),
    ({"k": [1]}, "a list value"),
]


@pytest.mark.parametrize("metadata", WITHIN, ids=["20 longest values", "edge values"])
def test_metadata_within_the_schemas_limits_is_accepted(api: APIClient, metadata: dict[str, Any]) -> None:
    assert metadata_schema_admits(api, metadata)

    response = charge(api, metadata=metadata)

    assert response.status_code == 201, response.content
    assert response.json()["metadata"] == metadata


@pytest.mark.parametrize(("metadata", "why"), BEYOND, ids=[why for _, why in BEYOND])
def test_metadata_beyond_the_schemas_limits_is_refused_by_both(
    api: APIClient, fake_provider: FakeProvider, metadata: dict[str, Any], why: str
) -> None:
    assert not metadata_schema_admits(api, metadata), why

    response = charge(api, metadata=metadata)

    assert "metadata" in error_of(response, 400, "invalid_request")["error"]["fields"], why
    assert fake_provider.total_charges() == 0


def amount_schema_admits(api: APIClient, amount: Any) -> bool:
    return OAS31Validator(request_schema(api)["amount"]).is_valid(amount)


@pytest.mark.parametrize("amount", ["568.0", "5.68e2", "568.000"])
def test_an_amount_written_as_a_whole_double_is_that_integer(
    api: APIClient, fake_provider: FakeProvider, amount: str
) -> None:
    assert amount_schema_admits(api, json.loads(amount))  # JSON Schema 2020-12: 568.0 is an integer
    body = json.dumps({**CHARGE, "amount": 0}).replace('"amount": 0', f'"amount": {amount}')

    response = api.post(
        "/api/v1/charges", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="order-568"
    )
    again = charge(api, key="order-568", amount=568)

    assert response.status_code == 201, response.content
    assert response.json()["amount"] == 568 and isinstance(response.json()["amount"], int)
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true", "the same request"
    assert fake_provider.total_charges() == 1


@pytest.mark.parametrize("amount", [19.99, 568.5, "1999", True])
def test_an_amount_that_is_not_an_integer_is_refused_by_both(
    api: APIClient, fake_provider: FakeProvider, amount: Any
) -> None:
    assert not amount_schema_admits(api, amount)

    response = charge(api, amount=amount)

    assert "amount" in error_of(response, 400, "invalid_request")["error"]["fields"]
    assert fake_provider.total_charges() == 0


NOT_STRINGS = [
    ("description", 5),
    ("description", True),
    ("description", 1.5),
    ("source", 42),
    ("currency", 840),
]


@pytest.mark.parametrize(("field", "value"), NOT_STRINGS)
def test_a_text_field_that_is_not_a_json_string_is_refused(
    api: APIClient, fake_provider: FakeProvider, field: str, value: Any
) -> None:
    response = charge(api, **{field: value})

    assert field in error_of(response, 400, "invalid_request")["error"]["fields"]
    assert Transaction.objects.count() == 0


@pytest.mark.parametrize("currency", ["usd", "Usd", " USD", "USD ", "USD\n"])
def test_a_currency_that_is_not_one_of_the_schemas_codes_is_refused(api: APIClient, currency: str) -> None:
    assert currency not in request_schema_components(api)["CurrencyEnum"]["enum"]

    response = charge(api, currency=currency)

    assert "currency" in error_of(response, 400, "invalid_request")["error"]["fields"]
    assert Transaction.objects.count() == 0
