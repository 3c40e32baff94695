from __future__ import annotations

import json
import logging
import os
import platform
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from core.events import log_event
from core.logs.redaction import REDACTED, redact
from tests.support.cloudwatch import ConfigureLogging, ShippedLogs
from tests.support.health import held_connections
from tests.support.service import TEST_API_KEY, pool_options, requires_pooled_mysql

CHARGE = {"amount": 1999, "currency": "USD", "source": "tok_visa", "description": "Order 1"}


def charge(api: APIClient, request_id: str | None = None, **overrides: Any) -> Any:
    headers = {"HTTP_X_REQUEST_ID": request_id} if request_id else {}
    return api.post("/api/v1/charges", {**CHARGE, **overrides}, format="json", **headers)


def test_provider_timeout_reaches_cloudwatch_with_transaction_id_and_request_id(
    api: APIClient, shipped_logs: ShippedLogs, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 1

    response = charge(api, request_id="incident-42", source="tok_timeout")

    assert response.status_code == 504
    transaction_id = response.json()["transaction"]["id"]
    [event] = shipped_logs.events('"payment.outcome_unknown"')
    assert event["event"] == "payment.outcome_unknown"
    assert event["level"] == "WARNING"
    assert event["transaction_id"] == transaction_id
    assert event["request_id"] == "incident-42"
    assert (event["error_type"], event["error_code"]) == ("outcome_unknown", "provider_timeout")
    assert event["http_attempts"] == 2
    assert "provider_timeout" in event["message"]
    streams = shipped_logs.client.describe_log_streams(logGroupName=shipped_logs.group)["logStreams"]
    assert [stream["logStreamName"] for stream in streams] == [f"{platform.node()}/{os.getpid()}"]


@requires_pooled_mysql
def test_exhausted_pool_ships_db_pool_exhausted_with_the_pool_figures(
    api: APIClient, shipped_logs: ShippedLogs
) -> None:
    with pool_options(POOL_SIZE=1, MAX_OVERFLOW=0, TIMEOUT=0.5), held_connections(1):
        response = charge(api, request_id="busy-1")

    assert response.status_code == 503
    [event] = shipped_logs.events('"db.pool_exhausted"')
    assert (event["level"], event["request_id"]) == ("WARNING", "busy-1")
    assert (event["size"], event["checked_out"], event["timeout_ms"]) == (1, 1, 500)
    assert "No database connection free within 500 ms" in event["message"]


def test_pool_exhaustion_event_is_shipped_and_found_by_a_filter_pattern(shipped_logs: ShippedLogs) -> None:
    log_event(
        logging.getLogger("payments.db"),
        "db.pool_exhausted",
        level=logging.ERROR,
        message="No database connection free within 5000 ms",
        size=10,
        checked_out=10,
        overflow=0,
        timeout_ms=5000,
    )
    log_event(logging.getLogger("payments.services"), "payment.succeeded", message="Payment succeeded")

    events = shipped_logs.events('"db.pool_exhausted"')

    assert [(e["event"], e["level"], e["checked_out"], e["timeout_ms"]) for e in events] == [
        ("db.pool_exhausted", "ERROR", 10, 5000)
    ]
    assert len(shipped_logs.events()) == 2, "the filter pattern, not the group, narrowed it to one"


def test_api_key_card_token_and_authorization_reach_no_event(
    api: APIClient,
    api_user_token: tuple[Any, str],
    shipped_logs: ShippedLogs,
    configure_logging: ConfigureLogging,
    cloudwatch_endpoint: str,
) -> None:
    client_token = api_user_token[1]
    handler = configure_logging(
        level="DEBUG", log_queries=True, log_group=shipped_logs.group, endpoint_url=cloudwatch_endpoint
    )
    shipped_logs.handler = handler
    connection.force_debug_cursor = True  # SQL with its parameters (the full token) at DEBUG
    try:
        assert charge(api, request_id="leaky", source="tok_visa").status_code == 201
        assert charge(api, source="tok_chargeDeclined").status_code == 402
    finally:
        connection.force_debug_cursor = False
    logging.getLogger("urllib3.connectionpool").warning(
        "Retrying after %s with headers %r",
        "connection broken",
        {"Authorization": f"Bearer {TEST_API_KEY}", "Idempotency-Key": "k1"},
    )
    try:
        raise RuntimeError(
            f"provider refused Authorization: Bearer {TEST_API_KEY} for source tok_visa "
            f"(client sent Authorization: Token {client_token}, db mysql://paymentsite:db-s3cret@db/pay)"
        )
    except RuntimeError:
        logging.getLogger("payments.provider").exception("Unexpected provider error")

    messages = shipped_logs.messages()

    text = "\n".join(messages)
    assert "INSERT INTO" in text, "the DEBUG SQL lines were shipped"
    assert "Unexpected provider error" in text and "Traceback" in text
    for secret in (TEST_API_KEY, client_token, "tok_visa", "tok_chargeDeclined", "db-s3cret"):
        assert secret not in text, f"{secret!r} was shipped"
    assert "tok_…visa" in text
    assert "Bearer [REDACTED]" in text and "Token [REDACTED]" in text
    assert all(json.loads(message)["level"] for message in messages)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Authorization: Bearer abcdef123", "Authorization: Bearer [REDACTED]"),
        ("authorization=Token 0123456789abcdef", "authorization=Token [REDACTED]"),
        ("{'Authorization': 'raw-key-no-scheme', 'A': 1}", "{'Authorization': '[REDACTED]', 'A': 1}"),
        (
            "headers={'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=ab12'}",
            "headers={'Authorization': b'[REDACTED]'}",
        ),
        ("mysql://app:p%40ss@10.0.0.5:3306/pay", "mysql://app:[REDACTED]@10.0.0.5:3306/pay"),
        ("DB_PASSWORD=hunter22 next", "DB_PASSWORD=[REDACTED] next"),
        ('{"password": "two words"}', '{"password": "[REDACTED]"}'),
        ("source tok_4242424242424242 declined", "source tok_…4242 declined"),
        ("already masked tok_…4242", "already masked tok_…4242"),
        ("http://127.0.0.1:8099/v1/charges timed out", "http://127.0.0.1:8099/v1/charges timed out"),
    ],
)
def test_redact_hides_credentials_in_the_forms_libraries_log_them(raw: str, expected: str) -> None:
    assert redact(raw) == expected


def test_redact_replaces_the_configured_api_key_anywhere() -> None:
    assert redact(f"key={TEST_API_KEY}x and {TEST_API_KEY}") == f"key={REDACTED}x and {REDACTED}"


class _RefusingLogsEndpoint(BaseHTTPRequestHandler):
    """Answers every CloudWatch Logs call as AWS does for a bad key or a throttled account."""

    error_type = "UnrecognizedClientException"
    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"__type": self.error_type, "message": "refused by the test endpoint"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_endpoint(request: pytest.FixtureRequest) -> Iterator[tuple[str, type[_RefusingLogsEndpoint]]]:
    handler = type("Refusing", (_RefusingLogsEndpoint,), {"error_type": request.param, "calls": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _charges_succeed_while_cloudwatch_fails(
    api: APIClient, handler: logging.Handler, capsys: pytest.CaptureFixture[str]
) -> str:
    for number in range(2):
        response = charge(api, request_id=f"during-outage-{number}")
        assert response.status_code == 201
        handler.flush()  # one failed batch per charge
    captured = capsys.readouterr()
    succeeded = [json.loads(line) for line in captured.out.splitlines() if '"payment.succeeded"' in line]
    assert [line["request_id"] for line in succeeded] == [f"during-outage-{n}" for n in range(2)]
    return captured.err


def test_charges_succeed_and_one_warning_is_printed_when_cloudwatch_is_down(
    api: APIClient,
    configure_logging: ConfigureLogging,
    capsys: pytest.CaptureFixture[str],
    cloudwatch_endpoint: str,
) -> None:
    handler = configure_logging(
        log_group="/paymentsite/down", endpoint_url=f"http://127.0.0.1:{closed_port()}"
    )
    assert handler is not None

    stderr = _charges_succeed_while_cloudwatch_fails(api, handler, capsys)

    assert stderr.count("cannot ship logs to CloudWatch") == 1, stderr
    assert "EndpointConnectionError" in stderr


@pytest.mark.parametrize(
    "refusing_endpoint",
    # botocore backs off between its tries on throttling: a few seconds per batch.
    ["UnrecognizedClientException", pytest.param("ThrottlingException", marks=pytest.mark.slow)],
    indirect=True,
)
def test_charges_succeed_and_one_warning_is_printed_when_cloudwatch_refuses(
    api: APIClient,
    configure_logging: ConfigureLogging,
    capsys: pytest.CaptureFixture[str],
    refusing_endpoint: tuple[str, type[_RefusingLogsEndpoint]],
    cloudwatch_endpoint: str,
) -> None:
    url, endpoint = refusing_endpoint
    handler = configure_logging(log_group="/paymentsite/refused", endpoint_url=url)
    assert handler is not None

    stderr = _charges_succeed_while_cloudwatch_fails(api, handler, capsys)

    assert endpoint.calls >= 2, "every batch was tried"
    assert stderr.count("cannot ship logs to CloudWatch") == 1, stderr
    assert endpoint.error_type in stderr


def test_stdout_lines_are_json_and_carry_the_callers_request_id(
    api: APIClient, configure_logging: ConfigureLogging, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging()

    response = charge(api, request_id="shop-7.retry_2")
    missing = api.get("/api/v1/charges/00000000-0000-0000-0000-000000000000", HTTP_X_REQUEST_ID="shop-7.b")

    assert response.status_code == 201
    assert response["X-Request-ID"] == "shop-7.retry_2"
    assert (missing.status_code, missing["X-Request-ID"]) == (404, "shop-7.b")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [succeeded] = [line for line in lines if line["event"] == "payment.succeeded"]
    assert succeeded["request_id"] == "shop-7.retry_2"
    assert succeeded["transaction_id"] == response.json()["id"]
    assert {"timestamp", "level", "logger", "message", "attempt", "duration_ms"} <= set(succeeded)
    [not_found] = [line for line in lines if line["logger"] == "django.request"]
    assert (not_found["level"], not_found["request_id"]) == ("WARNING", "shop-7.b")


@pytest.mark.parametrize("supplied", ["has spaces", "x" * 129, "new\nline", ""])
def test_unsafe_or_missing_request_id_is_replaced_by_a_generated_one(
    api: APIClient,
    configure_logging: ConfigureLogging,
    capsys: pytest.CaptureFixture[str],
    supplied: str,
) -> None:
    configure_logging()

    response = charge(api, request_id=supplied)

    generated = response["X-Request-ID"]
    assert generated != supplied and len(generated) == 32
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["request_id"] for line in lines if line["event"] == "payment.succeeded"] == [generated]


def test_console_format_is_one_readable_line_with_the_request_id(
    api: APIClient, configure_logging: ConfigureLogging, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(log_format="console")

    charge(api, request_id="desk-1")

    [line] = [line for line in capsys.readouterr().out.splitlines() if "payment.succeeded" in line]
    assert "INFO" in line and "[desk-1]" in line and "payment.succeeded: Payment succeeded" in line
    assert "tok_visa" not in line
