from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from tests.support.health import operator_get

CHARGE = {"amount": 1999, "currency": "USD", "source": "tok_visa"}


def scrape(client: Client) -> dict[str, Any]:
    response = operator_get(client, "/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def sample(families: dict[str, Any], family: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in families[family].samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_charge_counter_moves_with_the_charges_made(api: APIClient, client: Client) -> None:
    before = scrape(client)

    for _ in range(3):
        assert api.post("/api/v1/charges", CHARGE, format="json").status_code == 201
    declined = api.post("/api/v1/charges", {**CHARGE, "source": "tok_chargeDeclined"}, format="json")
    after = scrape(client)

    assert declined.status_code == 402

    def moved(name: str, family: str, **labels: str) -> float:
        return sample(after, family, name, **labels) - sample(before, family, name, **labels)

    assert moved("paymentsite_charges_total", "paymentsite_charges", outcome="succeeded") == 3
    assert moved("paymentsite_charges_total", "paymentsite_charges", outcome="declined") == 1
    assert (
        moved(
            "paymentsite_provider_request_duration_seconds_count",
            "paymentsite_provider_request_duration_seconds",
            kind="charge",
        )
        == 4
    )


def test_metrics_expose_pool_and_breaker_state(api: APIClient, client: Client) -> None:
    api.post("/api/v1/charges", CHARGE, format="json")
    families = scrape(client)

    assert sample(families, "paymentsite_provider_circuit_state", "paymentsite_provider_circuit_state") == 0
    for name in ("paymentsite_db_pool_exhausted", "paymentsite_db_pool_checkout_wait_seconds"):
        assert name in families
    if django_settings.DATABASE_IS_POOLED:
        size = django_settings.DATABASES["default"]["POOL_OPTIONS"]["POOL_SIZE"]
        assert (
            sample(families, "paymentsite_db_pool_size", "paymentsite_db_pool_size", alias="default") == size
        )
        assert "paymentsite_db_pool_checked_out" in families
        checkouts = sample(
            families, "paymentsite_db_pool_events", "paymentsite_db_pool_events_total", event="checkout"
        )
        assert checkouts >= 1
        waits = sample(
            families,
            "paymentsite_db_pool_checkout_wait_seconds",
            "paymentsite_db_pool_checkout_wait_seconds_count",
            alias="default",
        )
        assert waits >= 1


def http_requests(families: dict[str, Any], **labels: str) -> float:
    return sample(families, "paymentsite_http_requests", "paymentsite_http_requests_total", **labels)


def http_seconds_count(families: dict[str, Any], **labels: str) -> float:
    family, name = (
        "paymentsite_http_request_duration_seconds",
        "paymentsite_http_request_duration_seconds_count",
    )
    return sample(families, family, name, **labels)


def test_http_requests_are_counted_and_timed_by_route_method_and_status_class(
    api: APIClient, client: Client
) -> None:
    before = scrape(client)

    created = [api.post("/api/v1/charges", CHARGE, format="json") for _ in range(2)]
    for response in created:
        assert api.get(f"/api/v1/charges/{response.json()['id']}").status_code == 200
    assert api.post("/api/v1/charges", {**CHARGE, "amount": -1}, format="json").status_code == 400
    assert client.get("/no/such/page/123").status_code == 404
    assert client.generic("BREW", "/no/such/page/456").status_code == 404
    after = scrape(client)

    def moved(**labels: str) -> float:
        return http_requests(after, **labels) - http_requests(before, **labels)

    charges = "/api/v1/charges"
    assert [response.status_code for response in created] == [201, 201]
    assert moved(route=charges, method="POST", status="2xx") == 2
    assert moved(route=charges, method="POST", status="4xx") == 1
    # The GET routes under /api/v1/charges/ that this test's requests moved (an earlier test in
    # the same process may have left others, such as a charge's refunds).
    detail_routes = {
        s.labels["route"]
        for s in after["paymentsite_http_requests"].samples
        if s.labels.get("method") == "GET"
        and s.labels["route"].startswith(charges + "/")
        and moved(route=s.labels["route"], method="GET", status=s.labels["status"])
    }
    assert len(detail_routes) == 1, detail_routes  # the pattern, one label value, never the ids
    [detail] = detail_routes
    assert "<" in detail and created[0].json()["id"] not in detail
    assert moved(route=detail, method="GET", status="2xx") == 2
    assert moved(route="unmatched", method="GET", status="4xx") == 1
    assert moved(route="unmatched", method="other", status="4xx") == 1
    assert http_seconds_count(after, route=charges, method="POST", status="2xx") == http_requests(
        after, route=charges, method="POST", status="2xx"
    )
    routes = {s.labels["route"] for s in after["paymentsite_http_requests"].samples}
    assert not any("123" in route or "456" in route for route in routes)


def test_refund_counter_moves_with_the_refunds_made(api: APIClient, client: Client) -> None:
    charge = api.post("/api/v1/charges", CHARGE, format="json").json()
    before = scrape(client)

    for amount in (100, 200):
        refund = {"amount": amount, "reason": "requested_by_customer"}
        assert api.post(f"/api/v1/charges/{charge['id']}/refunds", refund, format="json").status_code == 201
    too_much = {"amount": 5000, "reason": "requested_by_customer"}
    assert api.post(f"/api/v1/charges/{charge['id']}/refunds", too_much, format="json").status_code == 422
    after = scrape(client)

    def moved(name: str, family: str, **labels: str) -> float:
        return sample(after, family, name, **labels) - sample(before, family, name, **labels)

    assert moved("paymentsite_refunds_total", "paymentsite_refunds", outcome="refund_succeeded") == 2
    assert moved("paymentsite_refunds_total", "paymentsite_refunds") == 2, (
        "a refund refused before sending is not"
    )
    attempts = moved(
        "paymentsite_provider_request_duration_seconds_count",
        "paymentsite_provider_request_duration_seconds",
        kind="refund",
    )
    assert attempts == 2
