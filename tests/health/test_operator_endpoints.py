"""Probes answer whatever the Host; /metrics and the detail of /health/ need METRICS_TOKEN."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from health import access
from payments import provider
from tests.support.config import run_check
from tests.support.health import OPERATOR_TOKEN, held_connections, unreachable_database
from tests.support.service import pool_options, requires_pooled_mysql

POD_IP_HOST = "10.42.7.19:8000"  # what a kubelet sends; not in ALLOWED_HOSTS
BEARER = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


@pytest.fixture
def token(settings: Any) -> str:
    settings.METRICS_TOKEN = OPERATOR_TOKEN
    return OPERATOR_TOKEN


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
def test_probes_answer_whatever_the_host_header(transactional_db: None, path: str) -> None:
    response = Client().get(path, HTTP_HOST=POD_IP_HOST)

    assert response.status_code == 200
    assert response.json() == {"status": "pass"}
    assert response["Content-Type"] == "application/health+json"
    assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize("path", ["/health/", "/metrics", "/health/live/", "/health/readyz", "/pay/"])
def test_every_other_path_stays_under_allowed_hosts(transactional_db: None, token: str, path: str) -> None:
    response = Client().get(path, HTTP_HOST=POD_IP_HOST, headers=BEARER)

    assert response.status_code == 400


def test_readiness_fails_when_the_database_is_unreachable(transactional_db: None) -> None:
    with unreachable_database():
        response = Client().get("/health/ready", HTTP_HOST=POD_IP_HOST)

    assert response.status_code == 503
    assert response.json() == {"status": "fail"}


@requires_pooled_mysql
def test_readiness_fails_at_once_when_the_pool_is_exhausted(transactional_db: None) -> None:
    acquire_timeout_s = 2.0
    with pool_options(POOL_SIZE=2, MAX_OVERFLOW=0, TIMEOUT=acquire_timeout_s), held_connections(2):
        started = time.monotonic()
        response = Client().get("/health/ready")
        elapsed_s = time.monotonic() - started
    after = Client().get("/health/ready")

    assert response.status_code == 503
    assert response.json() == {"status": "fail"}
    assert elapsed_s < acquire_timeout_s, "readiness must not queue behind an exhausted pool"
    assert after.status_code == 200


def test_metrics_need_the_bearer_token(transactional_db: None, token: str) -> None:
    client = Client()
    anonymous = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}x"})
    api_token = client.get("/metrics", headers={"Authorization": f"Token {OPERATOR_TOKEN}"})
    right = client.get("/metrics", headers=BEARER)

    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"] == 'Bearer realm="operator"'
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"] == 'Bearer realm="operator", error="invalid_token"'
    assert api_token.status_code == 401
    assert b"paymentsite_" not in anonymous.content + wrong.content + api_token.content
    assert right.status_code == 200
    assert b"paymentsite_charges_total" in right.content


def test_without_a_token_metrics_are_closed_in_production_and_open_in_debug(
    transactional_db: None, settings: Any
) -> None:
    settings.METRICS_TOKEN = ""
    production = Client().get("/metrics", headers=BEARER)
    production_health = Client().get("/health/", headers=BEARER)
    settings.DEBUG = True
    debug = Client().get("/metrics")

    assert production.status_code == 403
    assert b"METRICS_TOKEN is not set" in production.content
    assert production_health.json() == {"status": "pass"}
    assert debug.status_code == 200


def test_start_up_without_a_token_in_production_logs_one_warning(
    settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(access, "_warned", type(access._warned)())
    settings.METRICS_TOKEN = ""
    with caplog.at_level(logging.WARNING, logger="health"):
        Client()  # builds the handler and its middleware, as a worker does at start-up
        Client().get("/health/live")
        settings.METRICS_TOKEN = OPERATOR_TOKEN
        Client().get("/health/live")

    warnings = [r for r in caplog.records if getattr(r, "event", None) == "metrics.token_missing"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "METRICS_TOKEN is not set" in warnings[0].getMessage()


def test_health_detail_is_for_the_token_and_anonymous_callers_get_pass_or_fail(
    transactional_db: None, token: str
) -> None:
    client = Client()
    anonymous = client.get("/health/")
    operator = client.get("/health/", headers=BEARER)
    wrong = client.get("/health/", headers={"Authorization": "Bearer not-the-token-at-all"})
    with unreachable_database():
        failing = client.get("/health/")

    assert anonymous.status_code == 200
    assert anonymous.json() == {"status": "pass"}
    assert anonymous["Content-Type"] == "application/health+json"
    assert operator.status_code == 200
    assert "database:pool" in operator.json()["checks"]
    assert wrong.status_code == 401
    assert failing.status_code == 503
    assert failing.json() == {"status": "fail"}


def test_anonymous_callers_see_a_warning_as_pass(transactional_db: None, token: str, settings: Any) -> None:
    settings.PAYMENT_BREAKER_FAILURES = 1
    provider.get_client().breaker.record_failure()
    try:
        anonymous = Client().get("/health/")
        operator = Client().get("/health/", headers=BEARER)
    finally:
        provider.get_client().breaker.reset()

    assert operator.json()["status"] == "warn"
    assert anonymous.status_code == 200
    assert anonymous.json() == {"status": "pass"}


def test_signed_in_payment_page_users_get_what_the_badge_reads(
    transactional_db: None, token: str, settings: Any
) -> None:
    user = get_user_model().objects.create_user(username="cashier", password="pw-cashier")
    client = Client()
    client.force_login(user)
    settings.PAYMENT_BREAKER_FAILURES = 1
    provider.get_client().breaker.record_failure()
    try:
        body = client.get("/health/").json()
    finally:
        provider.get_client().breaker.reset()

    assert body["status"] == "warn"
    assert set(body["checks"]) == {"payment-provider:circuit", "payment-provider:responseTime"}
    assert body["checks"]["payment-provider:circuit"] == [{"status": "fail", "observedValue": "open"}]
    assert set(body["checks"]["payment-provider:responseTime"][0]) <= {"status", "observedValue"}


def test_a_short_metrics_token_stops_start_up_without_showing_it() -> None:
    result = run_check(METRICS_TOKEN="short-secret")

    assert result.returncode != 0
    assert (
        "METRICS_TOKEN=[REDACTED] (12 characters) is invalid: expected at least 16 characters"
        in result.stderr
    )
    assert "short-secret" not in result.stderr
