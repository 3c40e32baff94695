"""POST and GET /api/v1/charges/{id}/refunds, through the API as a client calls it."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments.models import Refund

pytestmark = pytest.mark.django_db(transaction=True)


def charged(api: APIClient) -> dict[str, Any]:
    response = api.post(
        "/api/v1/charges", {"amount": 1999, "currency": "USD", "source": "tok_visa"}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def refund(api: APIClient, charge_id: str, key: str | None = None, **body: Any) -> Any:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    payload = {"reason": "requested_by_customer", **body}
    return api.post(f"/api/v1/charges/{charge_id}/refunds", payload, format="json", **headers)


def test_a_partial_refund_then_the_rest(api: APIClient, fake_provider: FakeProvider) -> None:
    charge = charged(api)
    first = refund(api, charge["id"], amount=500, note="one item back")
    assert first.status_code == 201, first.content
    body = first.json()
    assert (body["object"], body["status"], body["amount"], body["currency"]) == (
        "refund",
        "succeeded",
        500,
        "USD",
    )
    assert body["charge"] == charge["id"] and body["next_step"] == {"action": "none", "at": None}
    assert body["error"] is None and body["provider_refund_id"].startswith("re_")
    rest = refund(api, charge["id"])
    assert rest.status_code == 201 and rest.json()["amount"] == 1499
    detail = api.get(f"/api/v1/charges/{charge['id']}").json()
    assert detail["amount_refunded"] == 1999
    assert [r["amount"] for r in detail["refunds"]] == [1499, 500]
    assert {a["kind"] for a in detail["attempt_log"]} == {"charge", "refund"}
    listed = api.get(f"/api/v1/charges/{charge['id']}/refunds")
    assert listed.status_code == 200 and [r["amount"] for r in listed.json()] == [1499, 500]
    assert fake_provider.refunded_amount(Refund.objects.first().transaction.provider_idempotency_key) == 1999


def test_more_than_is_left_is_a_typed_422_and_writes_nothing(api: APIClient) -> None:
    charge = charged(api)
    response = refund(api, charge["id"], amount=2000)
    assert response.status_code == 422
    body = response.json()
    assert body["error"]["code"] == "amount_exceeds_refundable" and body["error"]["refundable"] == 1999
    assert body["transaction"]["id"] == charge["id"] and body["refund"] is None
    assert not Refund.objects.exists()


def test_a_charge_not_succeeded_is_not_refundable(api: APIClient) -> None:
    response = api.post(
        "/api/v1/charges", {"amount": 1999, "currency": "USD", "source": "tok_chargeDeclined"}, format="json"
    )
    charge_id = response.json()["transaction"]["id"]
    answer = refund(api, charge_id)
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "charge_not_refundable"


@pytest.mark.parametrize(
    "body",
    [
        {"reason": "bored"},
        {"amount": 0},
        {"amount": "5"},
        {"amount": 5.5},
        {"amount": 5, "extra": 1},
        {"note": 5},
    ],
)
def test_bad_input_is_a_400_and_changes_nothing(api: APIClient, body: dict[str, Any]) -> None:
    charge = charged(api)
    response = refund(api, charge["id"], **body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_fields"
    assert not Refund.objects.exists()


def test_another_clients_charge_is_a_404(api: APIClient, make_client: Any) -> None:
    charge = charged(api)
    _, other = make_client("other-shop")
    assert refund(other, charge["id"]).status_code == 404
    assert other.get(f"/api/v1/charges/{charge['id']}/refunds").status_code == 404
    assert refund(api, "not-a-uuid").status_code == 404
    assert not Refund.objects.exists()


def test_the_same_key_replays_and_another_body_conflicts(api: APIClient, fake_provider: FakeProvider) -> None:
    charge = charged(api)
    first = refund(api, charge["id"], key="r-1", amount=300)
    again = refund(api, charge["id"], key="r-1", amount=300)
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    conflict = refund(api, charge["id"], key="r-1", amount=301)
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_key_reused"
    assert Refund.objects.count() == 1


def test_a_pending_refund_is_202_and_an_unknown_one_504(api: APIClient, fake_provider: FakeProvider) -> None:
    charge = charged(api)
    fake_provider.inject({"kind": "refund_pending", "on": "refund", "ms": 60_000})
    pending = refund(api, charge["id"], amount=100)
    assert pending.status_code == 202 and pending.json()["status"] == "pending"
    assert pending.json()["next_step"]["action"] == "verify"
    fake_provider.inject_many([{"kind": "drop_after", "on": "refund"}] * 4)
    unknown = refund(api, charge["id"], amount=100)
    assert unknown.status_code == 504
    body = unknown.json()
    assert (body["error"]["type"], body["error"]["retryable"]) == ("outcome_unknown", True)
    assert body["refund"]["status"] == "unknown" and body["refund"]["next_step"]["action"] == "verify"
    over = refund(api, charge["id"], amount=1800)
    assert over.status_code == 422, over.content
    assert over.json()["error"]["refundable"] == 1799
