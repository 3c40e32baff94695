"""The webhook endpoints API: register (secret shown once), list, read, change, remove, rotate,
deliveries (paged by cursor, over real HTTP) and replay; the URL rules at registration, whose name
lookup is bounded and holds no lock; typed errors."""

from __future__ import annotations

import base64
import threading
from typing import Any

import pytest
import requests
from django.db import connections
from rest_framework.test import APIClient

from payments import services
from payments.api.webhook_views import DeliveryPagination
from payments.models import EventDelivery, WebhookEndpoint
from payments.services import webhook_urls
from tests.support.api import assert_error_body
from tests.support.factories import charge
from tests.support.network import HANGING_HOST, HangingResolver

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
    page = api.get(f"/api/v1/webhook_endpoints/{endpoint_id}/deliveries").json()
    assert (page["next"], page["previous"]) == (None, None)
    (listed,) = page["results"]
    assert (listed["type"], listed["sequence"], listed["status"]) == ("charge.succeeded", 1, "pending")
    assert listed["event"].startswith("evt_") and listed["attempt_log"] == []

    replayed = api.post(f"/api/v1/webhook_endpoints/{endpoint_id}/deliveries/{listed['id']}/replay")
    assert replayed.status_code == 201, replayed.content
    assert (replayed.json()["sequence"], replayed.json()["replay_of"]) == (2, listed["id"])
    assert EventDelivery.objects.count() == 2
    missing = api.post(f"/api/v1/webhook_endpoints/{endpoint_id}/deliveries/dlv_nope/replay")
    assert_error_body(missing, "not_found")


def replays(delivery: EventDelivery, count: int) -> None:
    for _ in range(count):
        services.delivery_replay(delivery, actor="test")


def test_deliveries_page_by_cursor_each_once_newest_first_while_new_ones_arrive(
    live_server: Any, api_user_token: tuple[Any, str]
) -> None:
    user, token = api_user_token
    headers = {"Authorization": f"Token {token}"}
    base = f"{live_server.url}/api/v1/webhook_endpoints"
    endpoint_id = requests.post(
        base, json={"url": URL, "events": ["charge.succeeded"]}, headers=headers
    ).json()["id"]
    charge("tok_visa", client=user)
    first = EventDelivery.objects.get(endpoint_id=endpoint_id)
    size = DeliveryPagination.page_size
    replays(first, 2 * size + 9)  # sequences 1 to 2 pages and 10

    url: str | None = f"{base}/{endpoint_id}/deliveries"
    seen: list[int] = []
    pages = []
    while url is not None:
        answer = requests.get(url, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.content
        page = answer.json()
        pages.append(page)
        seen += [d["sequence"] for d in page["results"]]
        replays(first, 3)  # new deliveries at the head between pages move nothing the cursor points at
        url = page["next"]

    assert seen == list(range(2 * size + 10, 0, -1)), "every delivery once, newest first"
    assert [len(p["results"]) for p in pages] == [size, size, 10]
    assert pages[0]["previous"] is None and pages[1]["previous"] is not None
    assert pages[1]["next"].startswith(live_server.url), "an absolute link, as the charges list's"

    back = requests.get(pages[1]["previous"], headers=headers, timeout=30).json()
    assert [d["sequence"] for d in back["results"]][-size:] == seen[:size], "previous goes back to newer ones"


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "nope",
        "%FF",
        base64.b64encode(b"p=abc").decode(),  # DRF decodes it: a position that is no number
        base64.b64encode(b"o=-1").decode(),
        base64.b64encode(b"r=x").decode(),
        "9" * 5000,
    ],
    ids=["empty", "not-base64", "not-ascii", "position-not-a-number", "negative-offset", "reverse", "long"],
)
def test_a_cursor_that_is_not_ours_is_the_apis_404(
    api: APIClient, api_user_token: tuple[Any, str], cursor: str
) -> None:
    endpoint_id = register(api).json()["id"]
    charge("tok_visa", client=api_user_token[0])

    answer = api.get(f"/api/v1/webhook_endpoints/{endpoint_id}/deliveries?cursor={cursor}")

    assert answer.status_code == 404, answer.content
    assert_error_body(answer, "not_found")


def test_the_schema_declares_the_deliveries_page_and_its_cursor(api: APIClient) -> None:
    schema = api.get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/v1/webhook_endpoints/{endpoint_id}/deliveries"]["get"]
    cursor = next(p for p in operation["parameters"] if p["name"] == "cursor")
    assert cursor["in"] == "query" and cursor["schema"] == {"type": "string"} and not cursor.get("required")
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/EventDeliveryPage"}
    page = schema["components"]["schemas"]["EventDeliveryPage"]
    assert set(page["properties"]) == {"next", "previous", "results"}
    assert "404" in operation["responses"]


def test_the_schema_declares_the_endpoints(api: APIClient) -> None:
    paths = api.get("/api/schema/", {"format": "json"}).json()["paths"]
    assert {
        "/api/v1/webhook_endpoints",
        "/api/v1/webhook_endpoints/{endpoint_id}",
        "/api/v1/webhook_endpoints/{endpoint_id}/rotate",
        "/api/v1/webhook_endpoints/{endpoint_id}/deliveries",
        "/api/v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/replay",
    } <= set(paths)


def test_a_url_whose_name_gets_no_answer_is_refused_at_the_bound(
    api: APIClient, settings: Any, hanging_resolver: HangingResolver
) -> None:
    settings.EVENTS_TIMEOUT_MS = 200
    answer = register(api, f"http://{HANGING_HOST}/hooks")
    assert answer.status_code == 400
    error = assert_error_body(answer, "invalid_request")["error"]
    assert error["code"] == "url_not_allowed"
    assert error["message"] == f"The host '{HANGING_HOST}' did not resolve within 0.2 s."
    assert WebhookEndpoint.objects.count() == 0


def test_a_new_urls_lookup_holds_no_lock_on_the_endpoint(
    api_user_token: tuple[Any, str], settings: Any, hanging_resolver: HangingResolver
) -> None:
    settings.EVENTS_TIMEOUT_MS = 10_000
    api, slow = APIClient(), APIClient()
    for client in (api, slow):
        client.credentials(HTTP_AUTHORIZATION=f"Token {api_user_token[1]}")
    endpoint_id = register(api).json()["id"]
    path = f"/api/v1/webhook_endpoints/{endpoint_id}"
    answers: list[Any] = []

    def change_url() -> None:
        try:
            answers.append(slow.patch(path, {"url": f"http://{HANGING_HOST}/new"}, format="json"))
        finally:
            connections.close_all()

    changing = threading.Thread(target=change_url)
    changing.start()
    hanging_resolver.wait_until_hanging(1)

    other = api.patch(path, {"events": ["refund.failed"]}, format="json")  # not kept waiting
    assert changing.is_alive(), "the other change went through while the lookup hung"
    hanging_resolver.release()
    changing.join(timeout=15)

    assert other.status_code == 200, other.content
    assert [answer.status_code for answer in answers] == [200]
    row = WebhookEndpoint.objects.get(pk=endpoint_id)
    assert (row.url, row.events) == (f"http://{HANGING_HOST}/new", ["refund.failed"])
