"""What the tests of the API share: a charge request, and the one error body's shape."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

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
