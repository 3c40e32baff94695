"""`?page=` is an integer, as the schema says: anything else is the documented 404."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.support.api import charge, error_of


@pytest.mark.parametrize(
    "page",
    ["", "last", "+1", "%201", "1%20", "%D9%A1", "1.0", "0", "-1", "2", "9" * 5000],
    ids=[
        "empty",
        "last",
        "plus",
        "leading-space",
        "trailing-space",
        "arabic-one",
        "decimal",
        "zero",
        "minus",
        "past-the-last",
        "5000-digits",
    ],
)
def test_a_page_that_is_not_a_positive_integer_or_is_past_the_last_is_404(api: APIClient, page: str) -> None:
    charge(api)

    response = api.get(f"/api/v1/charges?page={page}")

    assert error_of(response, 404, "not_found")["error"]["code"] == "not_found"


@pytest.mark.parametrize("query", ["", "?page=1", "?page=01"])
def test_the_first_page_is_absent_1_or_01(api: APIClient, query: str) -> None:
    charge(api)

    response = api.get(f"/api/v1/charges{query}")

    assert response.status_code == 200
    assert response.json()["count"] == 1


def test_the_schema_says_page_is_an_integer_from_1(api: APIClient) -> None:
    schema = api.get("/api/schema/?format=json").json()
    parameters = schema["paths"]["/api/v1/charges"]["get"]["parameters"]

    page = next(p for p in parameters if p["name"] == "page")

    assert page["schema"] == {"type": "integer", "minimum": 1}
    assert "empty included" in page["description"]
