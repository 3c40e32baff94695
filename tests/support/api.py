"""What the tests of the API share: a charge request, and the one error body's shape."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

from fakeprovider import FakeProvider

CHARGE = {"amount": 1999, "currency": "USD", "source": "tok_visa"}


def charge(api: APIClient, key: str | None = None, **overrides: Any) -> Any:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return api.post("/api/v1/charges", {**CHARGE, **overrides}, format="json", **headers)


def error_of(response: Any, status: int, error_type: str) -> dict[str, Any]:
    """The answer's body, once it is the one error shape with this status and type."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error", "transaction"}
    assert body["error"]["type"] == error_type
    assert body["error"]["request_id"] == response["X-Request-ID"]
    return body


def assert_error_body(response: Any, error_type: str) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error", "transaction"}
    assert body["error"]["type"] == error_type
    assert {"type", "code", "message", "retryable", "request_id"} <= set(body["error"])
    assert body["error"]["request_id"] == response["X-Request-ID"]
    assert body["error"]["message"]
    return body


def answer_to(api: APIClient, fake_provider: FakeProvider, settings: Any, answer: str) -> Any:
    """A charge that gets this row of the answers table, as the API answers it."""
    settings.PAYMENT_MAX_RETRIES = 0
    if answer == "declined":
        return charge(api, source="tok_chargeDeclined")
    if answer == "rejected":
        fake_provider.inject({"kind": "status", "status": 400})  # its error body's code: invalid_request
        return charge(api)
    if answer == "outcome_unknown":
        settings.PAYMENT_TIMEOUT_MS = 200
        fake_provider.inject({"kind": "hold", "ms": 1000})
        return charge(api)
    if answer == "needs_review":
        settings.PAYMENT_MAX_ATTEMPTS = 1
    if answer == "succeeded":
        return charge(api)
    if answer == "canceled":
        failed = charge(api, key="order-canceled", source="tok_error").json()["transaction"]
        assert api.post(f"/api/v1/charges/{failed['id']}/cancel").status_code == 200
        return charge(api, key="order-canceled", source="tok_error")
    return charge(api, source="tok_error")
