"""A body is JSON or a 400: nothing Python's json module reads beyond JSON reaches a charge."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments.models import Transaction
from tests.support.api import error_of


def body(extra: str) -> bytes:
    """A charge request as raw text, with `extra` (`"name": value`) after its fields."""
    return ('{"amount": 1999, "currency": "USD", "source": "tok_visa", ' + extra + "}").encode()


NOT_JSON = {
    "NaN": body('"description": NaN'),
    "Infinity": body('"metadata": {"n": Infinity}'),
    "-Infinity": body('"metadata": {"n": -Infinity}'),
}
# A lone surrogate escape is JSON: the serializer refuses it, naming the field
# (tests/payments/api/test_views.py).


@pytest.mark.parametrize("raw", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_what_is_not_json_is_refused_with_400_and_nothing_is_sent(
    api: APIClient, fake_provider: FakeProvider, raw: bytes
) -> None:
    response = api.generic("POST", "/api/v1/charges", raw, content_type="application/json")

    assert error_of(response, 400, "invalid_request")["error"]["code"] == "parse_error"
    assert Transaction.objects.count() == 0
    assert fake_provider.total_charges() == 0


def test_an_escaped_surrogate_pair_is_one_character_and_is_kept(api: APIClient) -> None:
    raw = body('"description": "\\ud83d\\ude00", "metadata": {"\\ud83d\\ude00": "\\ud83d\\ude00"}')

    response = api.generic("POST", "/api/v1/charges", raw, content_type="application/json")

    assert response.status_code == 201, response.content
    assert response.json()["description"] == "\U0001f600"
    assert response.json()["metadata"] == {"\U0001f600": "\U0001f600"}
