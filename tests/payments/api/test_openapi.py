"""The OpenAPI document is valid, and it tells the truth about the server.

The schema served at /api/schema/ passes openapi-spec-validator; a Python client generated from
it with openapi-python-client (as README, "The API", shows) drives a live server through every
status the API answers, and each answer parses into the generated models with nothing left over.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
import requests
from django.contrib.auth import get_user_model
from django.test import Client as DjangoClient
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from fakeprovider import FakeProvider
from payments import failpoints, provider

PACKAGE = "paymentsite_api_client"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
OPERATIONS = (
    "charges_list",
    "charges_create",
    "charges_retrieve",
    "charges_cancel",
    "refunds_create",
    "refunds_list",
    "webhook_endpoints_list",
    "webhook_endpoints_create",
    "webhook_endpoints_retrieve",
    "webhook_endpoints_update",
    "webhook_endpoints_destroy",
    "webhook_endpoints_rotate",
    "webhook_deliveries_list",
    "webhook_deliveries_replay",
)


def fetch_schema(base_url: str) -> dict[str, Any]:
    response = requests.get(f"{base_url}/api/schema/", params={"format": "json"}, timeout=10)
    assert response.status_code == 200
    return response.json()


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for item in schema["paths"].values():
        for operation in item.values():
            yield operation["operationId"], operation


@pytest.fixture(scope="module")
def schema(live_server: Any) -> dict[str, Any]:
    return fetch_schema(live_server.url)


def test_the_served_schema_is_valid_openapi(schema: dict[str, Any]) -> None:
    assert schema["openapi"] == "3.1.0"  # JSON Schema 2020-12: propertyNames states metadata's key limit
    validate(schema)  # raises OpenAPIValidationError, naming the offending part


def test_the_validator_refuses_a_broken_schema(schema: dict[str, Any]) -> None:
    """The check can fail: a type JSON Schema does not have is refused."""
    broken = json.loads(json.dumps(schema))
    metadata = broken["components"]["schemas"]["ChargeCreateRequest"]["properties"]["metadata"]
    metadata["additionalProperties"] = {"type": ["string", "text"]}
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_every_answer_names_its_headers(schema: dict[str, Any]) -> None:
    found = dict(operations(schema))
    assert set(found) == set(OPERATIONS)
    for name, operation in found.items():
        responses = operation["responses"]
        for status, response in responses.items():
            assert "X-Request-ID" in response["headers"], (name, status)
        assert {"401", "403", "500", "503"} <= set(responses), name
        assert "Retry-After" in responses["503"]["headers"], name
        assert "WWW-Authenticate" in responses["401"]["headers"], name
    create = found["charges_create"]["responses"]
    assert "Retry-After" in create["409"]["headers"]
    for status in ("201", "402", "409", "422", "502", "504"):
        assert "Idempotent-Replayed" in create[status]["headers"], status
    listed = found["charges_list"]
    assert {"page", "status"} <= {p["name"] for p in listed["parameters"]}
    assert "404" in listed["responses"]
    error = schema["components"]["schemas"]["ErrorDetail"]["properties"]
    assert {"decline_code", "provider_code", "fields", "request_id"} <= set(error)


# A client generated from the live schema -------------------------------------------------------


@pytest.fixture(scope="module")
def generated(schema: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """`openapi-python-client generate` into a temporary directory, imported as a package."""
    root = tmp_path_factory.mktemp("client")
    (root / "schema.json").write_text(json.dumps(schema))
    # No post hooks: the generated code is imported, not kept, so it need not be formatted.
    (root / "config.yaml").write_text(f"package_name_override: {PACKAGE}\npost_hooks: []\n")
    result = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            "schema.json",
            "--output-path",
            PACKAGE,
            "--meta",
            "none",
            "--config",
            "config.yaml",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, "every part of the schema was understood"
    sys.path.insert(0, str(root))
    try:
        yield SimpleNamespace(
            client=importlib.import_module(PACKAGE),
            models=importlib.import_module(f"{PACKAGE}.models"),
            api=SimpleNamespace(
                **{name: importlib.import_module(f"{PACKAGE}.api.v1.{name}") for name in OPERATIONS}
            ),
        )
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture
def gen(generated: SimpleNamespace, live_server: Any, api_user_token: tuple[Any, str]) -> SimpleNamespace:
    """The generated package, with a client that holds the API key and raises on an unlisted status."""
    client = generated.client.AuthenticatedClient(
        base_url=live_server.url, token=api_user_token[1], prefix="Token", raise_on_unexpected_status=True
    )
    return SimpleNamespace(**vars(generated), authed=client, base_url=live_server.url)


# Objects whose keys are data, not fields.
FREE_FORM = {"ErrorDetailFields", "TransactionMetadata", "TransactionDetailMetadata"}
METADATA = {"order": "A-1", "lines": 2, "weight": 1.5, "gift": False, "note": None}


def charge_body(gen: SimpleNamespace, **overrides: Any) -> Any:
    fields = {"amount": 1999, "currency": "USD", "source": "tok_visa", "metadata": METADATA, **overrides}
    return gen.models.ChargeCreateRequest.from_dict(fields)


def no_leftovers(model: Any) -> None:
    """Every key of the answer is a field of the generated model, all the way down."""
    if type(model).__name__ in FREE_FORM:
        return
    assert model.additional_properties == {}, type(model).__name__
    for field in attrs.fields(type(model)):
        value = getattr(model, field.name)
        for item in value if isinstance(value, list) else [value]:
            if attrs.has(type(item)):
                no_leftovers(item)


def assert_transaction(gen: SimpleNamespace, response: Any, status: int, model: str = "Transaction") -> Any:
    assert response.status_code == status, response.content
    assert isinstance(response.parsed, getattr(gen.models, model))
    no_leftovers(response.parsed)
    return response.parsed


def assert_error(gen: SimpleNamespace, response: Any, status: int, error_type: str, code: str) -> Any:
    assert response.status_code == status, response.content
    parsed = response.parsed
    assert isinstance(parsed, gen.models.ErrorResponse), response.content
    no_leftovers(parsed)
    assert (parsed.error.type_.value, parsed.error.code) == (error_type, code)
    assert parsed.error.request_id == response.headers["X-Request-ID"]
    return parsed


def create(gen: SimpleNamespace, key: str | None = None, **overrides: Any) -> Any:
    headers = {"idempotency_key": key} if key else {}
    return gen.api.charges_create.sync_detailed(
        client=gen.authed, body=charge_body(gen, **overrides), **headers
    )


def test_generated_client_creates_reads_lists_and_cancels(gen: SimpleNamespace) -> None:
    created = assert_transaction(gen, create(gen, key="gen-1"), 201)
    assert created.status.value == "succeeded"
    assert created.metadata.to_dict() == METADATA
    replay = create(gen, key="gen-1")
    assert_transaction(gen, replay, 201)
    assert replay.headers["Idempotent-Replayed"] == "true"

    detail = assert_transaction(
        gen,
        gen.api.charges_retrieve.sync_detailed(client=gen.authed, transaction_id=created.id),
        200,
        "TransactionDetail",
    )
    assert [(a.number, a.outcome) for a in detail.attempt_log] == [(1, "succeeded")]

    page = assert_transaction(
        gen,
        gen.api.charges_list.sync_detailed(
            client=gen.authed, status=gen.models.ChargesListStatus.SUCCEEDED, page=1
        ),
        200,
        "TransactionPage",
    )
    assert (page.count, [t.id for t in page.results]) == (1, [created.id])

    refused = gen.api.charges_cancel.sync_detailed(client=gen.authed, transaction_id=created.id)
    assert_error(gen, refused, 409, "invalid_request", "not_cancelable")


def test_generated_client_parses_the_provider_outcomes(
    gen: SimpleNamespace, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0

    declined = assert_error(gen, create(gen, source="tok_chargeDeclined"), 402, "card_error", "card_declined")
    assert declined.error.decline_code == "generic_decline"
    assert declined.transaction.status.value == "declined"

    fake_provider.inject({"kind": "status", "status": 400})  # what it answers a token it does not know
    rejected = create(gen)
    assert assert_error(gen, rejected, 422, "provider_rejected", "provider_rejected").error.provider_code

    failed = assert_error(gen, create(gen, source="tok_error"), 502, "provider_error", "provider_error")
    assert failed.transaction.next_step.action.value == "retry"
    canceled = gen.api.charges_cancel.sync_detailed(client=gen.authed, transaction_id=failed.transaction.id)
    assert assert_transaction(gen, canceled, 200).status.value == "canceled"

    settings.PAYMENT_TIMEOUT_MS = 200
    fake_provider.inject({"kind": "hold", "ms": 1000})
    unknown = assert_error(gen, create(gen, key="gen-held"), 504, "outcome_unknown", "provider_timeout")
    assert unknown.transaction.status.value == "unknown"

    reused = create(gen, key="gen-held", amount=2000)
    assert_error(gen, reused, 409, "idempotency_error", "idempotency_key_reused")

    breaker = provider.get_client().breaker
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    busy = create(gen, key="gen-breaker")
    assert_error(gen, busy, 503, "provider_unavailable", "circuit_open")
    assert int(busy.headers["Retry-After"]) >= 1


def test_generated_client_parses_the_request_errors(gen: SimpleNamespace, settings: Any) -> None:
    invalid = assert_error(gen, create(gen, amount=0), 400, "invalid_request", "invalid_fields")
    assert "amount" in invalid.error.fields.additional_properties
    listed = gen.api.charges_list.sync_detailed(client=gen.authed, page=2)
    assert_error(gen, listed, 404, "not_found", "not_found")
    missing = gen.api.charges_retrieve.sync_detailed(client=gen.authed, transaction_id=uuid.uuid4())
    assert_error(gen, missing, 404, "not_found", "not_found")

    stranger = gen.client.AuthenticatedClient(
        base_url=gen.base_url, token="wrong", prefix="Token", raise_on_unexpected_status=True
    )
    unauthenticated = gen.api.charges_list.sync_detailed(client=stranger)
    assert_error(gen, unauthenticated, 401, "authentication_error", "authentication_failed")
    assert unauthenticated.headers["WWW-Authenticate"] == "Token"

    staff = get_user_model().objects.create_user(username="staff", password="pw-staff", is_staff=True)
    browser = DjangoClient()
    browser.force_login(staff)
    session = gen.client.Client(
        base_url=gen.base_url,
        cookies={settings.SESSION_COOKIE_NAME: browser.cookies[settings.SESSION_COOKIE_NAME].value},
        raise_on_unexpected_status=True,
    )
    forbidden = gen.api.charges_list.sync_detailed(client=session)
    assert_error(gen, forbidden, 403, "permission_error", "permission_denied")

    too_large = create(gen, description="x" * (65 * 1024))
    assert_error(gen, too_large, 413, "payload_too_large", "payload_too_large")

    # The generated client always sends JSON: a form body goes through its httpx client, and the
    # generated code parses the answer.
    form = gen.authed.get_httpx_client().post(
        "/api/v1/charges",
        content=b"amount=1999",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    unsupported = gen.api.charges_create._build_response(client=gen.authed, response=form)
    assert_error(gen, unsupported, 415, "unsupported_media_type", "unsupported_media_type")

    def crash() -> None:
        raise RuntimeError("a bug")

    with failpoints.armed("charge.before_insert", crash):
        crashed = create(gen)
    assert_error(gen, crashed, 500, "internal_error", "internal_error")


def test_the_generated_client_refuses_an_answer_its_schema_does_not_list(gen: SimpleNamespace) -> None:
    """Parsing is a real check: a status the schema leaves out raises."""
    response = gen.authed.get_httpx_client().request("PUT", "/api/v1/charges")

    assert response.status_code == 405
    with pytest.raises(gen.client.errors.UnexpectedStatus):
        gen.api.charges_create._build_response(client=gen.authed, response=response)


def refund(gen: SimpleNamespace, charge_id: Any, key: str | None = None, **fields: Any) -> Any:
    body = gen.models.RefundCreateRequest.from_dict({"reason": "requested_by_customer", **fields})
    headers = {"idempotency_key": key} if key else {}
    return gen.api.refunds_create.sync_detailed(
        client=gen.authed, transaction_id=charge_id, body=body, **headers
    )


def test_generated_client_refunds_through_every_status(
    gen: SimpleNamespace, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    charge = assert_transaction(gen, create(gen), 201)

    made = assert_transaction(gen, refund(gen, charge.id, key="gen-r1", amount=300), 201, "Refund")
    assert (made.status.value, made.amount) == ("succeeded", 300)
    replay = refund(gen, charge.id, key="gen-r1", amount=300)
    assert_transaction(gen, replay, 201, "Refund")
    assert replay.headers["Idempotent-Replayed"] == "true"
    reused = refund(gen, charge.id, key="gen-r1", amount=301)
    assert_error(gen, reused, 409, "idempotency_error", "idempotency_key_reused")

    fake_provider.inject({"kind": "refund_pending", "on": "refund", "ms": 60_000})
    held = assert_transaction(gen, refund(gen, charge.id, amount=100), 202, "Refund")
    assert (held.status.value, held.next_step.action.value) == ("pending", "verify")

    fake_provider.inject({"kind": "refund_failed", "on": "refund"})
    refused = assert_error(gen, refund(gen, charge.id, amount=100), 402, "refund_failed", "refund_failed")
    assert refused.refund.status.value == "failed"

    fake_provider.inject({"kind": "drop_after", "on": "refund"})
    unknown = assert_error(
        gen, refund(gen, charge.id, amount=100), 504, "outcome_unknown", "connection_dropped"
    )
    assert unknown.refund.status.value == "unknown" and unknown.transaction.id == charge.id

    too_much = refund(gen, charge.id, amount=1500)
    assert_error(gen, too_much, 422, "invalid_request", "amount_exceeds_refundable")
    assert too_much.parsed.error.refundable == 1999 - 300 - 100 - 100, "pending and unknown count, failed not"

    listed = gen.api.refunds_list.sync_detailed(client=gen.authed, transaction_id=charge.id)
    assert listed.status_code == 200
    assert [r.status.value for r in listed.parsed] == ["unknown", "failed", "pending", "succeeded"]
    for item in listed.parsed:
        no_leftovers(item)
    detail = assert_transaction(
        gen,
        gen.api.charges_retrieve.sync_detailed(client=gen.authed, transaction_id=charge.id),
        200,
        "TransactionDetail",
    )
    assert detail.amount_refunded == 300 and len(detail.refunds) == 4

    declined = assert_error(gen, create(gen, source="tok_chargeDeclined"), 402, "card_error", "card_declined")
    not_refundable = refund(gen, declined.transaction.id)
    assert_error(gen, not_refundable, 409, "invalid_request", "charge_not_refundable")
