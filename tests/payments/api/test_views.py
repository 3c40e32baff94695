from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments.models import PaymentAttempt, Transaction
from tests.support.api import assert_error_body
from tests.support.health import held_connections
from tests.support.service import pool_options, requires_pooled_mysql

CHARGE = {"amount": 1999, "currency": "USD", "source": "tok_visa", "description": "Order 1"}


def charge(
    api: APIClient, body: dict[str, Any] | None = None, key: str | None = None, **overrides: Any
) -> Any:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return api.post("/api/v1/charges", {**(body or CHARGE), **overrides}, format="json", **headers)


def test_successful_charge_is_recorded_with_one_attempt(api: APIClient, fake_provider: FakeProvider) -> None:
    response = charge(api, key="order-1")

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["amount"] == 1999 and body["currency"] == "USD"
    assert body["provider_charge_id"].startswith("ch_")
    assert body["source"] == "tok_…visa"
    txn = Transaction.objects.get(pk=body["id"])
    assert txn.source == "", "the full token is erased once the outcome is final"
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1
    detail = api.get(f"/api/v1/charges/{txn.pk}").json()
    assert [(a["number"], a["http_status"], a["outcome"]) for a in detail["attempt_log"]] == [
        (1, 200, "succeeded")
    ]


@pytest.mark.parametrize(
    ("source", "decline_code"),
    [("tok_chargeDeclined", "generic_decline"), ("tok_insufficientFunds", "insufficient_funds")],
)
def test_declined_card_answers_402_card_error(api: APIClient, source: str, decline_code: str) -> None:
    response = charge(api, source=source)

    assert response.status_code == 402
    body = assert_error_body(response, "card_error")
    assert body["error"]["decline_code"] == decline_code
    assert body["error"]["retryable"] is False
    assert body["transaction"]["status"] == "declined"
    assert PaymentAttempt.objects.count() == 1, "a decline is never retried"


def test_provider_refusing_the_source_is_final_and_told_apart_from_a_decline(
    api: APIClient, fake_provider: FakeProvider
) -> None:
    fake_provider.inject({"kind": "status", "status": 400})  # what it answers a token it does not know
    response = charge(api)

    assert response.status_code == 422
    body = assert_error_body(response, "provider_rejected")
    assert body["error"]["retryable"] is False
    assert "decline_code" not in body["error"]
    txn = Transaction.objects.get(pk=body["transaction"]["id"])
    assert (txn.status, txn.next_retry_at, txn.source) == ("declined", None, "")
    assert [a.http_status for a in txn.attempt_log.all()] == [400]
    assert fake_provider.total_charges() == 0


def test_flaky_provider_succeeds_on_third_attempt_and_records_all(
    api: APIClient, fake_provider: FakeProvider
) -> None:
    response = charge(api, source="tok_flaky")

    assert response.status_code == 201
    txn = Transaction.objects.get(pk=response.json()["id"])
    attempts = list(txn.attempt_log.order_by("number").values_list("http_status", "outcome"))
    assert attempts == [(503, "provider_error"), (503, "provider_error"), (200, "succeeded")]
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1
    assert txn.attempts == 1, "one charge try, three HTTP attempts"


def test_rate_limited_charge_waits_out_retry_after(api: APIClient) -> None:
    response = charge(api, source="tok_rateLimited")

    assert response.status_code == 201
    first, second = PaymentAttempt.objects.order_by("number")
    assert (first.http_status, second.http_status) == (429, 200)
    waited_s = (second.started_at - first.started_at).total_seconds() - first.duration_ms / 1000
    assert waited_s >= 0.9, f"Retry-After: 1 was not honoured (waited {waited_s:.2f} s)"


def test_timeout_leaves_the_outcome_unknown_then_same_key_succeeds_with_one_charge(
    api: APIClient, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 1
    fake_provider.timeout_window_s = 1.5

    started = time.monotonic()
    response = charge(api, source="tok_timeout", key="order-timeout")

    assert response.status_code == 504
    body = assert_error_body(response, "outcome_unknown")
    assert (body["error"]["code"], body["error"]["retryable"]) == ("provider_timeout", True)
    assert "not charged" not in body["error"]["message"].lower()
    assert body["transaction"]["next_step"]["action"] == "verify"
    txn = Transaction.objects.get(pk=body["transaction"]["id"])
    assert (txn.status, txn.error_type, txn.error_code) == ("unknown", "outcome_unknown", "provider_timeout")
    assert txn.error_message == "no answer within the read timeout"
    assert txn.next_retry_at is None, "an unknown outcome is verified, never blindly retried by a command"
    assert txn.attempt_log.count() == 2
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1, "the provider did charge"

    time.sleep(max(0.0, 1.6 - (time.monotonic() - started)))
    retried = charge(api, source="tok_timeout", key="order-timeout")

    assert retried.status_code == 201
    assert retried.json()["id"] == str(txn.pk)
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1
    assert fake_provider.total_charges() == 1


def test_replay_of_completed_key_returns_stored_answer_without_calling_provider(
    api: APIClient, fake_provider: FakeProvider
) -> None:
    first = charge(api, key="order-replay")
    txn = Transaction.objects.get(pk=first.json()["id"])
    requests_before = fake_provider.request_count(txn.provider_idempotency_key)

    replay = charge(api, key="order-replay")

    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    assert fake_provider.request_count(txn.provider_idempotency_key) == requests_before


def test_replay_of_declined_key_returns_402_again(api: APIClient) -> None:
    charge(api, key="order-declined", source="tok_chargeDeclined")

    replay = charge(api, key="order-declined", source="tok_chargeDeclined")

    assert replay.status_code == 402
    assert replay["Idempotent-Replayed"] == "true"
    assert Transaction.objects.count() == 1


def test_same_key_with_different_body_is_a_conflict(api: APIClient) -> None:
    charge(api, key="order-conflict")

    response = charge(api, key="order-conflict", amount=2999)

    assert response.status_code == 409
    assert assert_error_body(response, "idempotency_error")["error"]["code"] == "idempotency_key_reused"
    assert Transaction.objects.count() == 1


def test_twenty_concurrent_requests_with_one_key_charge_once(
    live_server: Any, api_user_token: tuple[Any, str], fake_provider: FakeProvider
) -> None:
    fake_provider.latency_ms = 200
    url = f"{live_server.url}/api/v1/charges"
    headers = {"Authorization": f"Token {api_user_token[1]}", "Idempotency-Key": "order-concurrent"}
    barrier = threading.Barrier(20)

    def post(_: int) -> int:
        barrier.wait()
        return requests.post(url, json=CHARGE, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(post, range(20)))

    assert set(statuses) <= {201, 409}, statuses
    assert statuses.count(201) >= 1
    assert Transaction.objects.count() == 1
    assert fake_provider.total_charges() == 1


@requires_pooled_mysql
def test_small_pool_serves_eight_concurrent_slow_charges(
    live_server: Any, api_user_token: tuple[Any, str], fake_provider: FakeProvider, settings: Any
) -> None:
    """With 2 pooled connections and a 500 ms provider, 8 concurrent charges all succeed.

    They could not if a request held its connection while waiting on the provider:
    six would wait out DB_ACQUIRE_TIMEOUT (1 s here) and get 503.
    """
    settings.PAYMENT_TIMEOUT_MS = 3000
    fake_provider.latency_ms = 500
    url = f"{live_server.url}/api/v1/charges"
    headers = {"Authorization": f"Token {api_user_token[1]}"}
    barrier = threading.Barrier(8)

    def post(_: int) -> int:
        barrier.wait()
        return requests.post(url, json=CHARGE, headers=headers, timeout=30).status_code

    with pool_options(POOL_SIZE=2, MAX_OVERFLOW=0, TIMEOUT=1.0), ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(post, range(8)))

    assert statuses == [201] * 8
    assert fake_provider.total_charges() == 8


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in CHARGE.items() if k != "amount"}, "amount"),
        ({**CHARGE, "amount": 0}, "amount"),
        ({**CHARGE, "amount": -5}, "amount"),
        ({**CHARGE, "amount": 19.99}, "amount"),
        ({**CHARGE, "amount": "1999"}, "amount"),
        ({**CHARGE, "amount": True}, "amount"),
        ({**CHARGE, "amount": 100_000_000}, "amount"),
        ({**CHARGE, "currency": "XYZ"}, "currency"),
        ({**CHARGE, "currency": "US"}, "currency"),
        ({**CHARGE, "currency": 840}, "currency"),
        ({k: v for k, v in CHARGE.items() if k != "source"}, "source"),
        ({**CHARGE, "source": "4242 4242 4242 4242"}, "source"),
        ({**CHARGE, "description": "x" * 501}, "description"),
        ({**CHARGE, "metadata": ["not", "an", "object"]}, "metadata"),
        ({**CHARGE, "metadata": {f"k{i}": "v" for i in range(21)}}, "metadata"),
        ({**CHARGE, "metadata": {"big": "x" * 5000}}, "metadata"),
        ({**CHARGE, "metadata": {"nested": {"a": 1}}}, "metadata"),
        ({**CHARGE, "unexpected": 1}, "unexpected"),
    ],
)
def test_invalid_input_is_rejected_and_writes_nothing(
    api: APIClient, fake_provider: FakeProvider, body: dict[str, Any], field: str
) -> None:
    response = api.post("/api/v1/charges", body, format="json")

    assert response.status_code == 400
    error = assert_error_body(response, "invalid_request")["error"]
    assert field in error["fields"]
    assert Transaction.objects.count() == 0
    assert fake_provider.total_charges() == 0


# JSON's "\udfff" escape is a lone surrogate in Python: no UTF-8 column can store it (MariaDB's JSON
# check refuses the insert) and no answer can echo it.
@pytest.mark.parametrize(
    ("fields", "field", "path"),
    [
        ('"metadata": {"order": "A-\\udfff"}', "metadata", "metadata.order"),
        ('"metadata": {"order\\udfff": "A-1"}', "metadata", "metadata.order\\udfff"),
        ('"metadata": {"lines": [{"sku": "\\ud800"}]}', "metadata", "metadata.lines[0].sku"),
        ('"description": "Order \\udfff"', "description", "description"),
        ('"\\udfff": 1', "\\udfff", "\\udfff"),
    ],
)
@pytest.mark.parametrize("key", [None, "order-surrogate"])
def test_text_that_cannot_be_stored_is_a_400_naming_the_field_and_writes_nothing(
    api: APIClient, fake_provider: FakeProvider, fields: str, field: str, path: str, key: str | None
) -> None:
    body = '{"amount": 1999, "currency": "USD", "source": "tok_visa", ' + fields + "}"
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}

    response = api.post("/api/v1/charges", body, content_type="application/json", **headers)

    assert response.status_code == 400, response.content
    error = assert_error_body(response, "invalid_request")["error"]
    assert error["code"] == "invalid_fields"
    [message] = error["fields"][field]
    assert message.startswith(f"`{path}` contains text that cannot be stored"), message
    assert Transaction.objects.count() == 0
    assert fake_provider.total_charges() == 0
    if key:  # the key is free: the corrected request is charged, not answered 409 for ever
        assert charge(api, key=key).status_code == 201


def test_body_that_is_not_json_is_415(api: APIClient) -> None:
    response = api.post("/api/v1/charges", "amount=1999", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert_error_body(response, "unsupported_media_type")
    assert Transaction.objects.count() == 0


def test_malformed_json_is_400(api: APIClient) -> None:
    response = api.post("/api/v1/charges", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert_error_body(response, "invalid_request")


def test_body_over_64_kib_is_413(api: APIClient) -> None:
    oversized = json.dumps({**CHARGE, "description": "x" * (65 * 1024)})

    response = api.post("/api/v1/charges", oversized, content_type="application/json")

    assert response.status_code == 413
    assert_error_body(response, "payload_too_large")
    assert Transaction.objects.count() == 0


def test_idempotency_key_over_255_characters_is_400(api: APIClient) -> None:
    response = charge(api, key="k" * 256)

    assert response.status_code == 400
    assert "Idempotency-Key" in assert_error_body(response, "invalid_request")["error"]["fields"]
    assert Transaction.objects.count() == 0


@pytest.mark.parametrize("authorization", [None, "Token wrong-token", "Bearer something"])
def test_missing_or_wrong_token_is_401(transactional_db: None, authorization: str | None) -> None:
    client = APIClient()
    if authorization:
        client.credentials(HTTP_AUTHORIZATION=authorization)

    response = client.post("/api/v1/charges", CHARGE, format="json")

    assert response.status_code == 401
    assert_error_body(response, "authentication_error")
    assert Transaction.objects.count() == 0


def test_client_sees_only_its_own_transactions(api: APIClient, make_client: Any) -> None:
    mine = charge(api).json()
    _, other = make_client("other-shop")
    theirs = charge(other).json()

    assert api.get(f"/api/v1/charges/{theirs['id']}").status_code == 404
    assert other.get(f"/api/v1/charges/{mine['id']}").status_code == 404
    assert api.get(f"/api/v1/charges/{uuid.uuid4()}").status_code == 404
    listed = api.get("/api/v1/charges").json()
    assert [row["id"] for row in listed["results"]] == [mine["id"]]


def test_list_filters_by_status_and_paginates(api: APIClient) -> None:
    charge(api)
    charge(api, source="tok_chargeDeclined")

    declined = api.get("/api/v1/charges?status=declined").json()
    assert declined["count"] == 1
    assert declined["results"][0]["status"] == "declined"
    assert api.get("/api/v1/charges?status=bogus").status_code == 400
    assert api.get("/api/v1/charges?status=succeeded").json()["count"] == 1


@pytest.mark.parametrize("query", ["status=", "status=bogus", "status=SUCCEEDED"])
def test_list_refuses_an_empty_or_unknown_status(api: APIClient, query: str) -> None:
    charge(api)

    response = api.get(f"/api/v1/charges?{query}")

    assert response.status_code == 400
    assert "status" in assert_error_body(response, "invalid_request")["error"]["fields"]


@pytest.mark.parametrize("page", ["2", "0", "abc"])
def test_a_page_past_the_last_or_not_a_number_is_the_apis_404(api: APIClient, page: str) -> None:
    charge(api)

    response = api.get(f"/api/v1/charges?page={page}")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert assert_error_body(response, "not_found")["error"]["code"] == "not_found"
    assert api.get("/api/v1/charges?page=1").json()["count"] == 1


@requires_pooled_mysql
def test_reads_answer_503_database_busy_when_no_connection_is_free(api: APIClient) -> None:
    txn_id = charge(api).json()["id"]

    with pool_options(POOL_SIZE=1, MAX_OVERFLOW=0, TIMEOUT=0.5), held_connections(1):
        answers = [api.get("/api/v1/charges"), api.get(f"/api/v1/charges/{txn_id}")]

    for response in answers:
        assert response.status_code == 503
        assert response["Retry-After"] == "1"
        assert assert_error_body(response, "database_busy")["error"]["retryable"] is True
    assert api.get(f"/api/v1/charges/{txn_id}").status_code == 200


class _NotJsonProvider(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b"<html>gateway</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_provider_answer_that_is_not_json_leaves_the_outcome_unknown(api: APIClient, settings: Any) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotJsonProvider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.PAYMENT_SERVICE_URL = f"http://127.0.0.1:{server.server_address[1]}/v1/charges"
    try:
        response = charge(api)
    finally:
        server.shutdown()
        server.server_close()

    assert response.status_code == 504
    body = assert_error_body(response, "outcome_unknown")
    assert body["error"]["code"] == "unusable_answer"
    assert body["transaction"]["status"] == "unknown"


def test_openapi_schema_describes_the_charge_endpoints(api: APIClient) -> None:
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = json.loads(response.content)
    assert {"/api/v1/charges", "/api/v1/charges/{transaction_id}"} <= set(schema["paths"])
