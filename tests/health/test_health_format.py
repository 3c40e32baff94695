"""/health/ in the IETF draft's format (draft-inadarei-api-health-check) in every state, and its
intentional 503s kept off the `django.request` ERROR lines that README's "Unhandled errors" alarm counts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from health import views
from payments import provider
from tests.support.health import OPERATOR_TOKEN, get_health, unreachable_database

# componentName (the part of a check's key before the colon) -> the draft's componentType
COMPONENT_TYPES = {"database": "datastore", "payment-provider": "component"}


@pytest.fixture
def token(settings: Any) -> str:
    settings.METRICS_TOKEN = OPERATOR_TOKEN
    return OPERATOR_TOKEN


@pytest.fixture
def open_breaker(settings: Any) -> Iterator[None]:
    settings.PAYMENT_BREAKER_FAILURES = 1
    provider.get_client().breaker.record_failure()
    yield
    provider.get_client().breaker.reset()


@pytest.fixture
def refused_credentials() -> Iterator[None]:
    provider.note_misconfigured(401)
    yield
    provider.misconfiguration.clear()


def assert_draft_format(body: dict[str, Any]) -> None:
    assert body["status"] in ("pass", "warn", "fail")
    for key, entries in body["checks"].items():
        component = key.split(":")[0]
        for entry in entries:
            assert entry["componentType"] == COMPONENT_TYPES[component], key
            if "observedValue" in entry:  # "observedUnit SHOULD be present if observedValue is present"
                assert entry["observedUnit"], key


def test_every_check_names_its_component_type_and_unit(health_client: Client) -> None:
    status, body = get_health(health_client)

    assert status == 200
    assert_draft_format(body)
    assert body["checks"]["database:connection"][0]["observedUnit"] == "ms"
    assert body["checks"]["payment-provider:responseTime"][0]["observedUnit"] == "ms"
    assert body["checks"]["payment-provider:circuit"][0]["observedUnit"] == "state"


def test_failing_and_warning_checks_keep_the_format(
    health_client: Client, open_breaker: None, refused_credentials: None
) -> None:
    with unreachable_database():
        status, body = get_health(health_client)

    assert status == 503
    assert body["checks"]["database:connection"][0]["status"] == "fail"
    assert body["checks"]["payment-provider:circuit"][0]["observedValue"] == "open"
    credentials = body["checks"]["payment-provider:credentials"][0]
    assert (credentials["observedValue"], credentials["observedUnit"]) == (401, "HTTP status code")
    assert_draft_format(body)


def django_request_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "django.request" and r.levelno >= logging.ERROR
    ]


@pytest.mark.parametrize("path", ["/health/", "/health/ready"])
def test_an_intentional_503_is_not_logged_as_an_unhandled_error(
    health_client: Client, token: str, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="django.request"), unreachable_database():
        anonymous = health_client.get(path)
        operator = health_client.get(path, headers={"Authorization": f"Bearer {token}"})

    assert (anonymous.status_code, operator.status_code) == (503, 503)
    assert django_request_errors(caplog) == []


def test_a_real_crash_in_health_is_still_logged(
    health_client: Client, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash() -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(views.health_report, "health_report", crash)
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.get("/health/")

    assert response.status_code == 500
    assert len(django_request_errors(caplog)) == 1


def test_a_wrong_bearer_token_is_answered_in_health_json(health_client: Client, token: str) -> None:
    response = health_client.get("/health/", headers={"Authorization": "Bearer not-the-token-at-all"})

    assert response.status_code == 401
    assert response["Content-Type"] == "application/health+json"
    assert response["WWW-Authenticate"] == 'Bearer realm="operator", error="invalid_token"'
    body = response.json()
    assert body["status"] == "fail"  # the draft: a 4xx answer carries `fail`
    assert "METRICS_TOKEN" in body["output"]
    assert "checks" not in body
