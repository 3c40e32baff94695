"""The webhook endpoints API: register (secret shown once), list, read, change, remove, rotate,
deliveries and replay; the URL rules at registration; typed errors."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from payments.models import EventDelivery, WebhookEndpoint
from payments.services import webhook_urls
from tests.support.api import assert_error_body
from tests.support.factories import charge

pytestmark = pytest.mark.django_db(transaction=True)

URL = "http://127.0.0.1:9/hooks"


@pytest.fixture(autouse=True)
def private_urls(settings: Any) -> Any:
    settings.EVENTS_ALLOW_PRIVATE_URLS = True
    return settings


def register(api: APIClient, url: str = URL, events: Any = ("charge.succeeded",)) -> Any:
    return api.post("/api/v1/webhook_endpoints", {"url": url, "events": list(events)}, format="json")


def test_register_answers_the_secret_once_then_never_again(api: APIClient) -> None:
    created = register(api)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["id"].startswith("we_") and body["object"] == "webhook_endpoint"
    assert body["secret"].startswith("whsec_") and body["events"] == ["charge.succeeded"]

    listed = api.get("/api/v1/webhook_endpoints").json()
    assert [e["id"] for e in listed] == [body["id"]] and "secret" not in listed[0]
    read = api.get(f"/api/v1/webhook_endpoints/{body['id']}").json()
    assert "secret" not in read and read["url"] == URL


def test_update_delete_and_another_clients_endpoint(api: APIClient, make_client: Any) -> None:
    endpoint_id = register(api).json()["id"]
    changed = api.patch(
        f"/api/v1/webhook_endpoints/{endpoint_id}",
        {"events": ["refund.failed", "refund.failed"], "enabled": False},
        format="json",
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["events"] == ["refund.failed"] and changed.json()["enabled"] is False

    _, other = make_client("other")
    assert_error_body(other.get(f"/api/v1/webhook_endpoints/{endpoint_id}"), "not_found")
    assert other.delete(f"/api/v1/webhook_endpoints/{endpoint_id}").status_code == 404

    assert api.delete(f"/api/v1/webhook_endpoints/{endpoint_id}").status_code == 204
    assert not WebhookEndpoint.objects.filter(pk=endpoint_id).exists()


def test_bad_bodies_are_typed_400s(api: APIClient) -> None:
    for body in (
        {"url": URL, "events": ["charge.exploded"]},
        {"url": URL, "events": []},
        {"url": URL},
        {"url": 5, "events": ["charge.succeeded"]},
        {"url": URL, "events": ["charge.succeeded"], "extra": 1},
    ):
        answer = api.post("/api/v1/webhook_endpoints", body, format="json")
        assert answer.status_code == 400, body
        assert_error_body(answer, "invalid_request")
    endpoint_id = register(api).json()["id"]
    answer = api.patch(f"/api/v1/webhook_endpoints/{endpoint_id}", {"enabled": "yes"}, format="json")
    assert answer.status_code == 400


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hooks",  # not https
        "https://127.0.0.1/hooks",
        "https://localhost/hooks",
        "https://[::1]/hooks",
        "https://10.1.2.3/hooks",
        "https://192.168.0.10/hooks",
        "https://169.254.169.254/latest/meta-data",  # the cloud's metadata service
        "https://[fe80::1]/hooks",
        "https://224.0.0.1/hooks",
        "https://240.0.0.1/hooks",
        "https://0.0.0.0/hooks",
        "https://[::ffff:127.0.0.1]/hooks",
        "https://[fc00::1]/hooks",
        "https://user:pw@8.8.8.8/hooks",
        "ftp://8.8.8.8/hooks",
    ],
)
def test_registration_refuses_urls_into_our_network(api: APIClient, settings: Any, url: str) -> None:
    settings.EVENTS_ALLOW_PRIVATE_URLS = False
    answer = register(api, url)
    assert answer.status_code == 400
    assert assert_error_body(answer, "invalid_request")["error"]["code"] == "url_not_allowed"
    assert WebhookEndpoint.objects.count() == 0


def test_a_public_address_is_allowed(settings: Any) -> None:
    settings.EVENTS_ALLOW_PRIVATE_URLS = False
    target = webhook_urls.check_url("https://8.8.8.8:8443/hooks?x=1")
    assert target is not None and (target.address, target.port, target.path) == (
        "8.8.8.8",
        8443,
        "/hooks?x=1",
    )
    assert webhook_urls.is_public("2001:4860:4860::8888")
    assert not webhook_urls.is_public("::ffff:10.0.0.1")


def test_an_update_to_a_refused_url_changes_nothing(api: APIClient, settings: Any) -> None:
    endpoint_id = register(api).json()["id"]
    settings.EVENTS_ALLOW_PRIVATE_URLS = False
    answer = api.patch(
        f"/api/v1/webhook_endpoints/{endpoint_id}", {"url": "https://10.0.0.1/"}, format="json"
    )
    assert answer.status_code == 400
    assert WebhookEndpoint.objects.get(pk=endpoint_id).url == URL


def test_rotate_shows_a_new_secret_once(api: APIClient) -> None:
    created = register(api).json()
    rotated = api.post(f"/api/v1/webhook_endpoints/{created['id']}/rotate")
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != created["secret"]
    row = WebhookEndpoint.objects.get(pk=created["id"])
    assert row.previous_secret == created["secret"] and row.secret == rotated.json()["secret"]


def test_deliveries_are_listed_and_one_can_be_replayed(
    api: APIClient, api_user_token: tuple[Any, str]
) -> None:
    endpoint_id = register(api).json()["id"]
    charge("tok_visa", client=api_user_token[0])
    (listed,) = api.get(f"/api/v1/webhook_endpoints/{endpoint_id}/deliveries").json()
    assert (listed["type"], listed["sequence"], listed["status"]) == ("charge.succeeded", 1, "pending")
    assert listed["event"].startswith("evt_") and listed["attempt_log"] == []

    replayed = api.post(f"/api/v1/webhook_endpoints/{endpoint_id}/deliveries/{listed['id']}/replay")
    assert replayed.status_code == 201, replayed.content
    assert (replayed.json()["sequence"], replayed.json()["replay_of"]) == (2, listed["id"])
    assert EventDelivery.objects.count() == 2
    missing = api.post(f"/api/v1/webhook_endpoints/{endpoint_id}/deliveries/dlv_nope/replay")
    assert_error_body(missing, "not_found")


def test_the_schema_declares_the_endpoints(api: APIClient) -> None:
    paths = api.get("/api/schema/", {"format": "json"}).json()["paths"]
    assert {
        "/api/v1/webhook_endpoints",
        "/api/v1/webhook_endpoints/{endpoint_id}",
        "/api/v1/webhook_endpoints/{endpoint_id}/rotate",
        "/api/v1/webhook_endpoints/{endpoint_id}/deliveries",
        "/api/v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/replay",
    } <= set(paths)
