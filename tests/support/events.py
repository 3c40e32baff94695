"""Provider events in tests: the secret, a fake provider that sends events to the live server,
signed posts by hand, and waiting for the events a fake has sent."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from fakeprovider import FakeProvider
from fakeprovider.events import sign
from tests.support.service import TEST_API_KEY

# For tests only: 24 bytes, base64 ("whsec_" + the key), as PAYMENT_WEBHOOK_SECRET takes them.
SECRET = "whsec_dGVzdHMtb25seS13ZWJob29rLXNlY3JldCE="
OTHER_SECRET = "whsec_YW5vdGhlci10ZXN0cy1vbmx5LXNlY3JldCEh"
EVENTS_PATH = "/webhooks/provider"


@pytest.fixture
def events_provider(live_server: Any, settings: Any) -> Iterator[FakeProvider]:
    """A fake provider of its own that posts its events to the live server, which charges
    through it and verifies them with SECRET."""
    fake = FakeProvider(
        api_key=TEST_API_KEY,
        timeout_window_s=2.0,
        events_url=live_server.url + EVENTS_PATH,
        events_secret=SECRET,
    )
    with fake:
        settings.PAYMENT_SERVICE_URL = fake.url
        settings.PAYMENT_HEALTH_URL = fake.health_url
        settings.PAYMENT_WEBHOOK_SECRET = (SECRET,)
        yield fake


def post_event(
    url: str,
    body: Any,
    *,
    msg_id: str | None = None,
    timestamp: int | None = None,
    secret: str = SECRET,
) -> requests.Response:
    """POST an event signed by hand, as the provider would (the fake's signer, not the library's)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = int(time.time()) if timestamp is None else timestamp
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, msg_id, stamp, raw),
        "Content-Type": "application/json",
    }
    return requests.post(url, data=raw, headers=headers, timeout=10)


def charge_event(
    event_type: str, key: str, *, amount: int = 1999, currency: str = "USD", **data: Any
) -> dict:
    status = event_type.split(".")[1]
    return {
        "type": event_type,
        "data": {
            "idempotency_key": key,
            "id": "ch_evt1",
            "status": status,
            "amount": amount,
            "currency": currency,
        }
        | data,
    }


def charge_at_provider(fake: FakeProvider, key: str, *, amount: int = 1999, source: str = "tok_visa") -> int:
    """Charge `key` at the fake directly, as an earlier request of ours that reached it would have."""
    answer = requests.post(
        fake.url,
        json={"amount": amount, "currency": "USD", "source": source},
        headers={"Authorization": f"Bearer {TEST_API_KEY}", "Idempotency-Key": key},
        timeout=10,
    )
    return answer.status_code


def wait_for_sent(fake: FakeProvider, count: int, *, within_s: float = 15.0) -> list[dict]:
    """The events `fake` has posted, once it has posted `count` (and had their answers)."""
    deadline = time.monotonic() + within_s
    while len(sent := fake.events_sent()) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(sent) >= count, sent
    return sent
