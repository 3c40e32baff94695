from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

CHARGE = {"amount": 1999, "currency": "USD", "source": "tok_visa"}


def scrape(client: Client) -> dict[str, Any]:
    response = client.get("/metrics")
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
