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
    [trickle] = wait_until(fake.trickles)  # noted just after the last byte went out
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


# proxy_404, redirect, and the server's own 404 ------------------------------------------


def test_proxy_404_answers_an_html_page_and_acts_on_nothing(
    fake: FakeProvider, session: requests.Session
) -> None:
    assert post(session, fake, "paid").status_code == 200
    fake.inject_many([{"kind": "proxy_404"}, {"kind": "proxy_404", "on": "lookup"}])

    on_charge = post(session, fake, "key-1")
    on_lookup = lookup(session, fake, "paid")

    for answer in (on_charge, on_lookup):
        assert answer.status_code == 404
        assert answer.headers["Content-Type"] == "text/html"
        assert answer.text.startswith("<html>") and "nginx" in answer.text
    assert fake.charge_count("key-1") == 0 and fake.request_count("key-1") == 1
    assert lookup(session, fake, "paid").status_code == 200, "the charge is still there"


def test_redirect_answers_302_to_elsewhere_and_acts_on_nothing(
    fake: FakeProvider, session: requests.Session
) -> None:
    fake.inject_many(
        [{"kind": "redirect"}, {"kind": "redirect", "on": "lookup", "location": "https://elsewhere.example/"}]
    )

    on_charge = post(session, fake, "key-1", allow_redirects=False)
    on_lookup = lookup(session, fake, "key-1", allow_redirects=False)
    followed = session.get(
        f"http://{fake.host}:{fake.port}{on_charge.headers['Location']}", headers=headers(), timeout=5
    )

    assert (on_charge.status_code, on_charge.headers["Location"]) == (302, "/v1/charges/moved-elsewhere")
    assert (on_lookup.status_code, on_lookup.headers["Location"]) == (302, "https://elsewhere.example/")
    assert fake.charge_count("key-1") == 0
    assert (followed.status_code, followed.json()["error"]["code"]) == (404, "resource_missing"), (
        "a client that follows the default redirect is told 'no such charge'"
    )


def test_an_unrecognized_path_is_a_404_without_the_no_such_charge_code(
    fake: FakeProvider, session: requests.Session
) -> None:
    answer = session.get(fake.url.replace("/v1/charges", "/v2/charges/key-1"), headers=headers(), timeout=5)

    assert answer.status_code == 404 and answer.headers["Content-Type"] == "application/json"
    assert "code" not in answer.json()["error"], "resource_missing belongs to the lookup of a key only"


# delayed_commit ---------------------------------------------------------------------------


def test_delayed_commit_charges_but_lookups_answer_resource_missing_until_it_commits(
    fake: FakeProvider, session: requests.Session
) -> None:
    fake.inject({"kind": "delayed_commit", "ms": 300, "key": "key-1"})

    sent_at = time.time()
    answer = post(session, fake, "key-1")
    answered_at = time.time()
    before = lookup(session, fake, "key-1")
    after = wait_until(lambda: (found := lookup(session, fake, "key-1")).status_code == 200 and found)

    assert answer.status_code == 200 and fake.charge_count("key-1") == 1
    assert (before.status_code, before.json()["error"]["code"]) == (404, "resource_missing")
    assert after.json() == answer.json()
    # Its commit time is when lookups first see it: the delay after the charge was made.
    assert sent_at + 0.3 <= fake.committed_at()["key-1"] <= answered_at + 0.3


def test_delayed_commit_goes_on_under_the_next_fault_for_the_same_request(fake: FakeProvider) -> None:
    # The path: the charge is made, its answer is lost, and lookups find nothing yet.
    fake.inject_many([{"kind": "delayed_commit", "ms": 60_000, "key": "key-1"}, {"kind": "drop_after"}])

    with requests.Session() as session, pytest.raises(requests.ConnectionError):
        post(session, fake, "key-1")
    with requests.Session() as session:
        missing = lookup(session, fake, "key-1")

    assert fake.charge_count("key-1") == 1
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "resource_missing")
    assert fake.faults_applied() == [("delayed_commit", "charge", "key-1"), ("drop_after", "charge", "key-1")]


# other_charge -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "changed"),
    [
        ("amount", {"amount": 1}),
        ("currency", {"currency": "JPY"}),
        ("key", {"reference": "another-charge"}),
        ("all", {"amount": 1, "currency": "JPY", "reference": "another-charge"}),
    ],
)
def test_other_charge_charges_then_answers_success_for_another_charge(
    fake: FakeProvider, session: requests.Session, variant: str, changed: dict[str, Any]
) -> None:
    fake.inject_many([{"kind": "other_charge", "variant": variant}, {"kind": "other_charge", "on": "lookup"}])

    answer = post(session, fake, "key-1").json()
    looked_up = lookup(session, fake, "key-1").json()

    made = fake.ledger()["key-1"]
    assert (made["amount"], made["currency"], made["idempotency_key"]) == (1999, "USD", "key-1")
    assert answer["status"] == "succeeded"
    assert {name: answer[name] for name in changed} == changed
    assert (answer["idempotency_key"] != "key-1") is (variant in ("key", "all"))
    assert (looked_up["amount"], looked_up["currency"], looked_up["reference"]) == (
        1,
        "JPY",
        "another-charge",
    )


def test_an_unknown_other_charge_variant_is_refused(fake: FakeProvider) -> None:
    with pytest.raises(ValueError, match="Unknown other_charge variant"):
        fake.inject({"kind": "other_charge", "variant": "long_id"})


# status with a junk Retry-After ----------------------------------------------------------------


def test_status_sends_a_string_retry_after_as_it_is(fake: FakeProvider, session: requests.Session) -> None:
    fake.inject({"kind": "status", "status": 500, "retry_after": "²"})

    answer = post(session, fake, "key-1")

    assert (answer.status_code, answer.headers["Retry-After"]) == (500, "²")
    assert fake.charge_count("key-1") == 0


@pytest.mark.parametrize("value", ["", "١٢", "1\r\nX-Injected: yes", 1.5, -1])
def test_status_refuses_a_retry_after_that_is_no_header_value(fake: FakeProvider, value: object) -> None:
    with pytest.raises(ValueError, match="retry_after"):
        fake.inject({"kind": "status", "status": 503, "retry_after": value})
