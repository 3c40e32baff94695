"""The fake provider's faults for issue 18: answers a client must not trust, over real HTTP."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from fakeprovider import FakeProvider

API_KEY = "sk_test_fake"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(api_key=API_KEY) as running:
        yield running


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as client:
        yield client


def charge_body(amount: int = 1999, currency: str = "USD", reference: str = "tx-1") -> dict[str, Any]:
    return {"amount": amount, "currency": currency, "source": "tok_visa", "reference": reference}


def headers(key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}", **({"Idempotency-Key": key} if key else {})}


def post(session: requests.Session, fake: FakeProvider, key: str, **kwargs: Any) -> requests.Response:
    return session.post(fake.url, json=charge_body(), headers=headers(key), timeout=10, **kwargs)


def lookup(session: requests.Session, fake: FakeProvider, key: str, **kwargs: Any) -> requests.Response:
    return session.get(f"{fake.url}/{key}", headers=headers(), timeout=10, **kwargs)


def wait_until(condition: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    give_up_at = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > give_up_at:
            raise AssertionError("condition not met")
        time.sleep(0.02)
    return value


# trickle ---------------------------------------------------------------------------------


def test_trickle_charges_then_sends_the_whole_answer_a_byte_at_a_time(
    fake: FakeProvider, session: requests.Session
) -> None:
    fake.inject({"kind": "trickle", "ms": 1})

    answer = post(session, fake, "key-1")

    assert answer.status_code == 200 and answer.json()["status"] == "succeeded"
    assert fake.charge_count("key-1") == 1
    [trickle] = fake.trickles()
    assert trickle["sent"] == trickle["total"] > len(answer.content) and not trickle["hung_up"]


def test_trickle_stops_when_the_client_hangs_up_and_on_lookups_too(fake: FakeProvider) -> None:
    fake.inject_many([{"kind": "trickle", "ms": 20}, {"kind": "trickle", "ms": 20, "on": "lookup"}])
    for request in (b"POST /v1/charges", b"GET /v1/charges/key-2"):
        with socket.create_connection((fake.host, fake.port)) as raw:
            body = (
                b'{"amount":5,"currency":"USD","source":"tok_visa"}' if request.startswith(b"POST") else b""
            )
            raw.sendall(
                request + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode() + b"\r\n"
                b"Idempotency-Key: key-2\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            assert raw.recv(1) == b"H"  # the first byte of "HTTP/1.1 200 OK"

    trickles = wait_until(lambda: len(fake.trickles()) == 2 and fake.trickles())
    assert all(entry["hung_up"] and entry["sent"] < entry["total"] for entry in trickles)
    assert fake.faults_applied() == [("trickle", "charge", "key-2"), ("trickle", "lookup", "key-2")]
