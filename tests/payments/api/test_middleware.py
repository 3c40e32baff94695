"""Under /api/, a path that is no endpoint and a refused Host answer the API's JSON error, never HTML."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments.models import Transaction
from tests.support.api import CHARGE, assert_error_body

UNROUTED = [
    ("get", "/api/v1/nope"),
    ("get", "/api/v1/charges/a/b"),
    ("post", "/api/v1/charges/"),
    ("get", "/api/"),
    ("get", "/api"),
    ("delete", "/api/v1/charges/00000000-0000-4000-8000-000000000000/cancel/more"),
]
# Settings that must never reach a caller, whatever DJANGO_DEBUG says.
SETTINGS_NAMES = ("ALLOWED_HOSTS", "SECRET_KEY", "DATABASES", "PAYMENT_API_KEY")


@pytest.fixture(params=[False, True], ids=["production", "debug"])
def debug(request: pytest.FixtureRequest, settings: Any) -> bool:
    settings.DEBUG = request.param
    return request.param


@pytest.mark.parametrize(("method", "path"), UNROUTED)
@pytest.mark.parametrize("signed_in", [True, False], ids=["token", "anonymous"])
def test_a_path_under_api_that_is_no_endpoint_is_the_apis_json_404(
    api: APIClient, fake_provider: FakeProvider, debug: bool, method: str, path: str, signed_in: bool
) -> None:
    client = api if signed_in else APIClient()

    response = getattr(client, method)(path, CHARGE, format="json")

    assert response.status_code == 404, response.content[:200]
    assert response["Content-Type"] == "application/json"
    error = assert_error_body(response, "not_found")["error"]
    assert error["code"] == "not_found" and error["retryable"] is False
    assert Transaction.objects.count() == 0
    assert fake_provider.total_charges() == 0


def test_a_trailing_slash_on_an_endpoint_says_the_paths_have_none(api: APIClient, debug: bool) -> None:
    response = api.post("/api/v1/charges/", CHARGE, format="json")

    assert response.status_code == 404
    assert "no trailing slash" in assert_error_body(response, "not_found")["error"]["message"]
    assert api.post("/api/v1/charges", CHARGE, format="json").status_code == 201


def test_a_path_outside_api_keeps_djangos_html_404(transactional_db: None, debug: bool) -> None:
    response = Client().get("/no/such/page")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("method", "path"), [("get", "/api/v1/charges"), ("post", "/api/v1/charges"), ("get", "/api/v1/nope")]
)
def test_a_refused_host_under_api_is_a_json_400_naming_the_header_and_showing_no_settings(
    api: APIClient, fake_provider: FakeProvider, debug: bool, method: str, path: str
) -> None:
    response = getattr(api, method)(path, CHARGE, format="json", HTTP_HOST="payments.evil.example")

    assert response.status_code == 400, response.content[:200]
    assert response["Content-Type"] == "application/json"
    error = assert_error_body(response, "invalid_request")["error"]
    assert error["code"] == "invalid_fields"
    assert list(error["fields"]) == ["Host"]
    text = response.content.decode()
    assert not any(name in text for name in SETTINGS_NAMES), text
    assert Transaction.objects.count() == 0
    assert fake_provider.total_charges() == 0


def test_a_refused_host_outside_api_keeps_djangos_400(transactional_db: None, settings: Any) -> None:
    settings.DEBUG = False

    response = Client().get("/pay/", HTTP_HOST="payments.evil.example")

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
