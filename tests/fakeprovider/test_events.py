"""The fake provider's events: what it posts, signed as Standard Webhooks says (checked with the
`standardwebhooks` package, not the fake's own signer), and each event fault, to a real receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from standardwebhooks import Webhook, WebhookVerificationError

from fakeprovider import FakeProvider
from fakeprovider.events import sign
from tests.support.events import SECRET, charge_at_provider, wait_for_sent
from tests.support.service import TEST_API_KEY


class Receiver:
    """A real HTTP server that keeps every POST (headers and raw body) and answers 200."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verified(self, index: int) -> Any:
        headers, body = self.posts[index]
        return Webhook(SECRET).verify(body, headers)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture
def fake(receiver: Receiver) -> Iterator[FakeProvider]:
    with FakeProvider(api_key=TEST_API_KEY, events_url=receiver.url, events_secret=SECRET) as running:
        yield running


def test_the_signer_matches_the_library() -> None:
    body = b'{"type": "charge.succeeded"}'
    stamp = int(time.time())

    expected = Webhook(SECRET).sign("msg_1", datetime.fromtimestamp(stamp, tz=UTC), body.decode())

    assert sign(SECRET, "msg_1", stamp, body) == expected


def test_a_settled_charge_is_posted_once_signed(fake: FakeProvider, receiver: Receiver) -> None:
    charge_at_provider(fake, "ps_one")
    charge_at_provider(fake, "ps_one")  # a replay of the same key settles nothing new

    sent = wait_for_sent(fake, 1)

    assert len(receiver.posts) == 1
    event = receiver.verified(0)
    assert event["type"] == "charge.succeeded"
    assert event["data"] | {"id": "-"} == {
        "idempotency_key": "ps_one",
        "id": "-",
        "status": "succeeded",
        "amount": 1999,
        "currency": "USD",
    }
    assert event["data"]["id"].startswith("ch_")
    assert sent[0]["id"] == receiver.posts[0][0]["webhook-id"]


def test_a_declined_charge_is_posted_as_charge_declined(fake: FakeProvider, receiver: Receiver) -> None:
    charge_at_provider(fake, "ps_declined", source="tok_chargeDeclined")

    wait_for_sent(fake, 1)

    assert receiver.verified(0)["type"] == "charge.declined"


def test_refunds_are_posted_when_they_settle(fake: FakeProvider, receiver: Receiver) -> None:
    charge_at_provider(fake, "ps_r")
    fake.inject({"kind": "refund_pending", "on": "refund", "ms": 3_600_000})
    headers = {"Authorization": f"Bearer {TEST_API_KEY}", "Idempotency-Key": "rf_1"}
    answer = requests.post(f"{fake.url}/ps_r/refunds", json={"amount": 5}, headers=headers, timeout=10)
    assert answer.json()["status"] == "pending"
    wait_for_sent(fake, 1)
    assert len(fake.events_sent()) == 1, "a pending refund is not announced"

    fake.settle_refund("rf_1", "failed")
    wait_for_sent(fake, 2)

    event = receiver.verified(1)
    assert (event["type"], event["data"]["idempotency_key"], event["data"]["amount"]) == (
        "refund.failed",
        "rf_1",
        5,
    )


def test_duplicate_posts_the_same_request_twice(fake: FakeProvider, receiver: Receiver) -> None:
    fake.inject({"kind": "duplicate", "on": "event"})
    charge_at_provider(fake, "ps_dup")

    wait_for_sent(fake, 2)

    assert receiver.posts[0] == receiver.posts[1]


def test_reorder_holds_an_event_until_the_next_is_posted(fake: FakeProvider, receiver: Receiver) -> None:
    fake.inject({"kind": "reorder", "on": "event", "key": "ps_first"})
    charge_at_provider(fake, "ps_first")
    charge_at_provider(fake, "ps_second")

    wait_for_sent(fake, 2)

    keys = [json.loads(body)["data"]["idempotency_key"] for _, body in receiver.posts]
    assert keys == ["ps_second", "ps_first"]


def test_delay_lets_later_events_go_first(fake: FakeProvider, receiver: Receiver) -> None:
    fake.inject({"kind": "delay", "on": "event", "key": "ps_slow", "ms": 2000})
    charge_at_provider(fake, "ps_slow")
    charge_at_provider(fake, "ps_fast")

    wait_for_sent(fake, 2)

    keys = [json.loads(body)["data"]["idempotency_key"] for _, body in receiver.posts]
    assert keys == ["ps_fast", "ps_slow"]


@pytest.mark.parametrize(("fault", "why"), [("bad_signature", "No matching"), ("stale", "too old")])
def test_bad_signature_and_stale_do_not_verify(
    fake: FakeProvider, receiver: Receiver, fault: str, why: str
) -> None:
    fake.inject({"kind": fault, "on": "event"})
    charge_at_provider(fake, "ps_bad")

    wait_for_sent(fake, 1)

    with pytest.raises(WebhookVerificationError, match=why):
        receiver.verified(0)


def test_event_faults_are_checked_like_the_others() -> None:
    with FakeProvider() as plain, pytest.raises(ValueError):
        plain.inject({"kind": "delay", "on": "event"})  # needs ms
