"""The fake provider's events: signed Standard Webhooks POSTs of each charge and refund it settles.

An event is `{"type": "charge.succeeded" | "charge.declined" | "refund.succeeded" |
"refund.failed", "data": {"idempotency_key", "id", "status", "amount", "currency"}}`, posted to
`events_url` with `webhook-id` (`msg_…`), `webhook-timestamp` (Unix seconds) and
`webhook-signature` (`v1,` + base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed by the
base64 after `whsec_` of `events_secret`). The signer is written by hand (a few lines of
`hmac`) rather than taken from the `standardwebhooks` package: the fake is standard library
only, so it runs without the project's dependencies, and a signer of its own checks the
service's verifier against the scheme rather than against the same code.

One dispatcher thread posts events in the order they were settled, once each (no retries: the
`duplicate` fault stands for at-least-once delivery). Faults (`"on": "event"`, `"key"` the
charge's or the refund's idempotency key) change one event each:

    {"kind": "duplicate", "on": "event"}        post it twice, the same id and signature
    {"kind": "delay", "on": "event", "ms": 500}  post it 500 ms later; later events go on
    {"kind": "reorder", "on": "event"}           hold it until the next event has been posted
    {"kind": "bad_signature", "on": "event"}     sign it with another secret
    {"kind": "stale", "on": "event"}             sign it with a timestamp ten minutes old
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import queue
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

JsonObject = dict[str, Any]
STALE_BY_S = 600
POST_TIMEOUT_S = 5.0
TICK_S = 0.05


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks v1 signature: base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`."""
    encoded = secret.removeprefix("whsec_")
    key = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def event_body(kind: str, record: JsonObject, key: str, currency: str) -> JsonObject:
    """The event for a settled charge or refund (`kind` "charge" or "refund")."""
    return {
        "type": f"{kind}.{record['status']}",
        "data": {
            "idempotency_key": key,
            "id": record["id"],
            "status": record["status"],
            "amount": record["amount"],
            "currency": currency,
        },
    }


@dataclass
class _Outgoing:
    key: str
    body: JsonObject
    msg_id: str = field(default_factory=lambda: f"msg_{secrets.token_hex(12)}")
    fault: str | None = None
    delay_ms: int = 0


class EventSender:
    """Posts events on a daemon thread; `take_fault(key)` gives the next event fault for a key."""

    def __init__(
        self, url: str, secret: str, take_fault: Callable[[str], Any], *, tick: Callable[[], None]
    ) -> None:
        self.url = url
        self.secret = secret
        self._take_fault = take_fault
        # Called whenever no event is waiting (every TICK_S): the provider queues the events of
        # refunds that settled on their own since (a pending refund's time came).
        self._tick = tick
        self._queue: queue.Queue[_Outgoing | None] = queue.Queue()
        self._held: _Outgoing | None = None
        self._lock = threading.Lock()
        self._sent: list[JsonObject] = []
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fake-provider-events", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def emit(self, kind: str, record: JsonObject, key: str, currency: str) -> None:
        """Queue the event for a charge or refund that has just settled (never blocks)."""
        self._queue.put(_Outgoing(key, event_body(kind, record, key, currency)))

    def sent(self) -> list[JsonObject]:
        """Each post made: id, type, key, fault, and the HTTP status (None: no answer)."""
        with self._lock:
            return [dict(entry) for entry in self._sent]

    def reset(self) -> None:
        with self._lock:
            self._sent.clear()
            self._held = None

    def _run(self) -> None:
        while True:
            try:
                outgoing = self._queue.get(timeout=TICK_S)
            except queue.Empty:
                self._tick()
                continue
            if outgoing is None:
                return
            fault = self._take_fault(outgoing.key)
            if fault is not None:
                outgoing.fault, outgoing.delay_ms = fault.kind, fault.ms or 0
            held, self._held = self._held, None
            if outgoing.fault == "reorder":
                self._held = outgoing
            elif outgoing.fault == "delay":
                timer = threading.Timer(outgoing.delay_ms / 1000, self._post, (outgoing,))
                timer.daemon = True
                timer.start()
            elif outgoing.fault == "duplicate":
                headers = self._signed_headers(outgoing)
                self._post(outgoing, headers)
                self._post(outgoing, headers)
            else:
                self._post(outgoing)
            if held is not None:
                self._post(held)

    def _signed_headers(self, outgoing: _Outgoing) -> dict[str, str]:
        timestamp = int(time.time()) - (STALE_BY_S if outgoing.fault == "stale" else 0)
        secret = self.secret
        if outgoing.fault == "bad_signature":
            secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        body = json.dumps(outgoing.body).encode()
        return {
            "webhook-id": outgoing.msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, outgoing.msg_id, timestamp, body),
        }

    def _post(self, outgoing: _Outgoing, signed: dict[str, str] | None = None) -> None:
        headers = signed or self._signed_headers(outgoing)
        body = json.dumps(outgoing.body).encode()
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={**headers, "Content-Type": "application/json"}
        )
        status: int | None
        try:
            with urllib.request.urlopen(request, timeout=POST_TIMEOUT_S) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, ValueError):
            status = None
        with self._lock:
            self._sent.append(
                {
                    "id": outgoing.msg_id,
                    "type": outgoing.body["type"],
                    "key": outgoing.key,
                    "fault": outgoing.fault,
                    "status": status,
                }
            )
