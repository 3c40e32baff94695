"""The fake provider's refunds (issue 19): its ledger per charge key, idempotency, refusals of
more than is left, and the fault queue on refunds and refund lookups, over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from fakeprovider import FakeProvider, Fault

API_KEY = "sk_test_fake"
CHARGED = 1000


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(api_key=API_KEY) as running:
        yield running


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as client:
        yield client


def headers(key: str | None = None, api_key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", **({"Idempotency-Key": key} if key else {})}


def charge(session: requests.Session, fake: FakeProvider, key: str, source: str = "tok_visa") -> dict:
    body = {"amount": CHARGED, "currency": "EUR", "source": source, "reference": key}
    response = session.post(fake.url, json=body, headers=headers(key), timeout=10)
    assert response.status_code in (200, 402)
    return response.json()


def refund(
    session: requests.Session,
    fake: FakeProvider,
    charge_key: str,
    key: str | None,
    amount: int | None = 400,
    *,
    body: Any = None,
    timeout: float = 10,
    api_key: str = API_KEY,
) -> requests.Response:
    sent = body if body is not None else {"amount": amount}
    url = f"{fake.url}/{charge_key}/refunds"
    return session.post(url, json=sent, headers=headers(key, api_key), timeout=timeout, allow_redirects=False)


def refund_lookup(
    session: requests.Session, fake: FakeProvider, charge_key: str, key: str, timeout: float = 10
) -> requests.Response:
    return session.get(f"{fake.url}/{charge_key}/refunds/{key}", headers=headers(), timeout=timeout)


def control(fake: FakeProvider, path: str) -> str:
    return f"http://{fake.host}:{fake.port}{path}"


def wait_until(condition: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    give_up_at = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > give_up_at:
            raise AssertionError("condition not met")
        time.sleep(0.01)
    return value


@pytest.fixture
def charged(fake: FakeProvider, session: requests.Session) -> str:
    charge(session, fake, "ch-key")
    return "ch-key"


def error_of(response: requests.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["type"], error.get("code", "")


# The ledger and idempotency


def test_a_refund_is_made_once_and_its_key_answers_the_same_refund(
    fake: FakeProvider, session: requests.Session, charged: str
) -> None:
    first = refund(session, fake, charged, "re-key")
    again = refund(session, fake, charged, "re-key")

    assert first.status_code == again.status_code == 200
    body = first.json()
    assert body["id"].startswith("re_") and body["status"] == "succeeded"
    assert (body["amount"], body["charge"]) == (400, fake.ledger()[charged]["id"])
    assert again.json() == body and again.headers["Idempotent-Replayed"] == "true"
    assert fake.refund_ledger() == {charged: {"re-key": body}}
    assert (fake.refund_count("re-key"), fake.total_refunds(), fake.refunded_amount(charged)) == (1, 1, 400)
    assert fake.refund_request_count("re-key") == 2


def test_a_refund_is_looked_up_by_its_charge_key_and_refund_key(
    fake: FakeProvider, session: requests.Session, charged: str
) -> None:
    charge(session, fake, "other-charge")
    made = refund(session, fake, charged, "re-key").json()

    found = refund_lookup(session, fake, charged, "re-key")
    never = refund_lookup(session, fake, charged, "never-sent")
    under_another_charge = refund_lookup(session, fake, "other-charge", "re-key")

    assert (found.status_code, found.json()) == (200, made)
    for missing in (never, under_another_charge):
        assert error_of(missing) == (404, "invalid_request_error", "resource_missing")


@pytest.mark.parametrize(("charge_key", "amount"), [("ch-key", 300), ("other-charge", 400)])
def test_the_same_refund_key_with_another_request_is_an_idempotency_error(
    fake: FakeProvider, session: requests.Session, charged: str, charge_key: str, amount: int
) -> None:
    charge(session, fake, "other-charge")
    made = refund(session, fake, charged, "re-key", 400).json()

    reused = refund(session, fake, charge_key, "re-key", amount)

    assert error_of(reused) == (400, "idempotency_error", "key_reused")
    assert fake.refund_ledger() == {charged: {"re-key": made}}


def test_partial_refunds_add_up_to_the_charge_and_no_further(
    fake: FakeProvider, session: requests.Session, charged: str
) -> None:
    assert refund(session, fake, charged, "first", 600).status_code == 200
    too_much = refund(session, fake, charged, "second", 401)
    rest = refund(session, fake, charged, "second", 400)
    nothing_left = refund(session, fake, charged, "third", 1)

    assert error_of(too_much) == (400, "invalid_request_error", "amount_exceeds_remaining")
    assert "400" in too_much.json()["error"]["message"], "it says what is left"
    assert rest.status_code == 200, "a refused request keeps nothing for its key"
    assert error_of(nothing_left) == (400, "invalid_request_error", "amount_exceeds_remaining")
    assert sorted(fake.refund_ledger()[charged]) == ["first", "second"]
    assert fake.refunded_amount(charged) == CHARGED


def test_a_pending_refund_counts_against_what_is_left_and_a_failed_one_does_not(
    fake: FakeProvider, session: requests.Session, charged: str
) -> None:
    fake.inject_many(
        [
            {"kind": "refund_pending", "on": "refund", "key": "pending", "ms": 600_000},
            {"kind": "refund_failed", "on": "refund", "key": "failed"},
        ]
    )
    assert refund(session, fake, charged, "pending", 700).json()["status"] == "pending"
    failed = refund(session, fake, charged, "failed", 300).json()

    assert (failed["status"], failed["failure_reason"]) == ("failed", "expired_or_canceled_card")
    assert fake.refunded_amount(charged) == 700
    assert error_of(refund(session, fake, charged, "more", 301))[2] == "amount_exceeds_remaining"
    assert refund(session, fake, charged, "more", 300).status_code == 200
    assert (fake.refund_count("failed"), fake.refund_count("pending"), fake.total_refunds()) == (0, 1, 2)


def test_a_charge_that_is_not_there_or_not_succeeded_is_not_refunded(
    fake: FakeProvider, session: requests.Session
) -> None:
    charge(session, fake, "declined", source="tok_chargeDeclined")
    fake.inject({"kind": "delayed_commit", "ms": 600_000})
    charge(session, fake, "not-visible-yet")

    unknown = refund(session, fake, "never-charged", "r1")
    declined = refund(session, fake, "declined", "r2")
    invisible = refund(session, fake, "not-visible-yet", "r3")

    assert error_of(unknown) == (404, "invalid_request_error", "resource_missing")
    assert error_of(declined) == (400, "invalid_request_error", "charge_not_refundable")
    assert error_of(invisible) == (404, "invalid_request_error", "resource_missing")
    assert fake.refund_ledger() == {}


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"key": None}, 400),
        ({"key": "k" * 256}, 400),
        ({"key": "k", "body": {"amount": 0}}, 400),
        ({"key": "k", "body": {"amount": "400"}}, 400),
        ({"key": "k", "body": {"amount": 400, "currency": "EUR"}}, 400),
        ({"key": "k", "body": [400]}, 400),
        ({"key": "k", "api_key": "sk_wrong"}, 401),
    ],
)
def test_a_bad_refund_request_is_refused_and_refunds_nothing(
    fake: FakeProvider, session: requests.Session, charged: str, kwargs: dict[str, Any], status: int
) -> None:
    response = refund(session, fake, charged, **kwargs)

    assert response.status_code == status
    assert fake.refund_ledger() == {}


def test_the_refund_routes_answer_only_their_methods(
    fake: FakeProvider, session: requests.Session, charged: str
) -> None:
    listing = session.get(f"{fake.url}/{charged}/refunds", headers=headers(), timeout=10)
    posted = session.post(f"{fake.url}/{charged}/refunds/r1", json={"amount": 1}, headers=headers("r1"))

    assert (listing.status_code, listing.headers["Allow"]) == (405, "POST")
    assert (posted.status_code, posted.headers["Allow"]) == (405, "GET")


def test_keys_are_read_percent_decoded(fake: FakeProvider, session: requests.Session) -> None:
    charge(session, fake, "a/b c")
    made = refund(session, fake, "a%2Fb%20c", "re/1").json()

    assert fake.refund_ledger() == {"a/b c": {"re/1": made}}
    assert refund_lookup(session, fake, "a%2Fb%20c", "re%2F1").json() == made


def test_concurrent_refunds_with_different_keys_never_refund_more_than_was_charged(
    fake: FakeProvider, charged: str
) -> None:
    fake.latency_ms = 20
    barrier = threading.Barrier(8)

    def send(number: int) -> int:
        with requests.Session() as own:
            barrier.wait()
            return refund(own, fake, charged, f"race-{number}", 300).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(send, range(8)))

    assert statuses == [200, 200, 200, 400, 400, 400, 400, 400]
    assert fake.refunded_amount(charged) == 900


def test_concurrent_refunds_with_the_same_key_make_one_refund(fake: FakeProvider, charged: str) -> None:
    fake.latency_ms = 20
    barrier = threading.Barrier(6)

    def send(_: int) -> requests.Response:
        with requests.Session() as own:
            barrier.wait()
            return refund(own, fake, charged, "same", 300)

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(send, range(6)))

    assert {response.status_code for response in responses} <= {200, 409}
    ids = {response.json()["id"] for response in responses if response.status_code == 200}
    assert len(ids) == 1
    assert (fake.refund_count("same"), fake.refunded_amount(charged)) == (1, 300)


# Pending refunds


def test_a_pending_refund_settles_as_its_fault_says(
    fake: FakeProvider, session: requests.Session, charged: str
) -> None:
    fake.inject_many(
        [
            {"kind": "refund_pending", "on": "refund", "key": "will-succeed", "ms": 50},
            {"kind": "refund_pending", "on": "refund", "key": "will-fail", "ms": 50, "variant": "failed"},
        ]
    )
    assert refund(session, fake, charged, "will-succeed", 100).json()["status"] == "pending"
    assert refund(session, fake, charged, "will-fail", 100).json()["status"] == "pending"

    def settled(key: str) -> str | None:
        status = refund_lookup(session, fake, charged, key).json()["status"]
        return None if status == "pending" else status

    assert wait_until(lambda: settled("will-succeed")) == "succeeded"
    assert wait_until(lambda: settled("will-fail")) == "failed"
    assert refund(session, fake, charged, "will-fail", 100).json()["status"] == "failed", "a replay too"
    assert fake.refunded_amount(charged) == 100


def test_a_pending_refund_stays_pending_until_settled(
    fake: FakeProvider, session: requests.Session, charged: str
) -> None:
    fake.inject({"kind": "refund_pending", "on": "refund", "ms": 600_000})
    made = refund(session, fake, charged, "held", 100).json()

    assert refund_lookup(session, fake, charged, "held").json()["status"] == "pending"
    assert fake.settle_refund("held", "failed") == {
        **made,
        "status": "failed",
        "failure_reason": "expired_or_canceled_card",
    }
    assert fake.settle_refund("held") is None, "only a pending refund settles"
    assert refund_lookup(session, fake, charged, "held").json()["status"] == "failed"


def test_a_pending_refund_with_no_wait_answers_settled(
    fake: FakeProvider, session: requests.Session, charged: str
) -> None:
    fake.inject({"kind": "refund_pending", "on": "refund", "ms": 0, "variant": "failed"})

    assert refund(session, fake, charged, "at-once", 100).json()["status"] == "failed"


# Faults on refunds


def test_a_status_fault_on_a_refund_refunds_nothing_and_a_retry_refunds(
    fake: FakeProvider, session: requests.Session, charged: str
) -> None:
    fake.inject({"kind": "status", "on": "refund", "status": 503, "retry_after": 2})

    failed = refund(session, fake, charged, "re-key")
    retried = refund(session, fake, charged, "re-key")

    assert (failed.status_code, failed.headers["Retry-After"]) == (503, "2")
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers
    assert fake.faults_applied() == [("status", "refund", "re-key")]


def test_faults_on_refunds_are_matched_by_the_refund_key_and_leave_charges_alone(
    fake: FakeProvider, session: requests.Session, charged: str
) -> None:
    fake.inject_many(
        [
            {"kind": "status", "on": "refund", "key": "target", "status": 500},
            {"kind": "status", "on": "refund_lookup", "status": 502},
        ]
    )

    other = refund(session, fake, charged, "other")
    charged_again = charge(session, fake, "another-charge")
    target = refund(session, fake, charged, "target")

    assert other.status_code == 200 and charged_again["status"] == "succeeded"
    assert target.status_code == 500
    assert refund_lookup(session, fake, charged, "other").status_code == 502
    assert fake.pending_faults() == []
    assert fake.faults_applied() == [("status", "refund", "target"), ("status", "refund_lookup", "other")]


def test_drop_after_refunds_then_closes_the_connection(
    fake: FakeProvider, session: requests.Session, charged: str
) -> None:
    fake.inject({"kind": "drop_after", "on": "refund"})

    with pytest.raises(requests.ConnectionError):
        refund(session, fake, charged, "dropped")

    assert fake.refund_count("dropped") == 1
    assert refund_lookup(session, fake, charged, "dropped").json()["status"] == "succeeded"


@pytest.mark.parametrize("on", ["refund", "refund_lookup"])
def test_drop_before_closes_the_connection_acting_on_nothing(
    fake: FakeProvider, session: requests.Session, charged: str, on: str
) -> None:
    if on == "refund_lookup":
        refund(session, fake, charged, "re-key")
    fake.inject({"kind": "drop_before", "on": on})

    with pytest.raises(requests.ConnectionError):
        if on == "refund":
            refund(session, fake, charged, "re-key")
        else:
            refund_lookup(session, fake, charged, "re-key")

    assert fake.refund_count("re-key") == (1 if on == "refund_lookup" else 0)


def test_slow_holds_the_key_in_flight_and_its_amount_against_what_is_left(
    fake: FakeProvider, charged: str
) -> None:
    fake.inject({"kind": "slow", "on": "refund", "key": "slow", "ms": 3000})
    with ThreadPoolExecutor(max_workers=1) as pool, requests.Session() as own:
        slow = pool.submit(refund, own, fake, charged, "slow", 800)
        wait_until(lambda: fake.refund_in_progress("slow"))
        with requests.Session() as session:
            in_flight = refund(session, fake, charged, "slow", 800)
            over = refund(session, fake, charged, "other", 300)
            missing = refund_lookup(session, fake, charged, "slow")
        made = slow.result()

    assert error_of(in_flight) == (409, "idempotency_error", "request_in_progress")
    assert error_of(over)[2] == "amount_exceeds_remaining"
    assert missing.status_code == 404
    assert made.status_code == 200 and fake.refunded_amount(charged) == 800


def test_delayed_commit_hides_a_refund_from_lookups(
    fake: FakeProvider, session: requests.Session, charged: str
) -> None:
    fake.inject({"kind": "delayed_commit", "on": "refund", "ms": 600_000})

    made = refund(session, fake, charged, "re-key")

    assert made.status_code == 200 and fake.refund_count("re-key") == 1
    assert error_of(refund_lookup(session, fake, charged, "re-key"))[2] == "resource_missing"
    assert refund(session, fake, charged, "re-key").json() == made.json(), "a replay answers it"


def test_a_modifier_is_followed_by_the_next_matching_fault(
    fake: FakeProvider, session: requests.Session, charged: str
) -> None:
    fake.inject_many(
        [{"kind": "refund_pending", "on": "refund", "ms": 600_000}, {"kind": "drop_after", "on": "refund"}]
    )

    with pytest.raises(requests.ConnectionError):
        refund(session, fake, charged, "re-key")

    assert fake.refund_ledger()[charged]["re-key"]["status"] == "pending"
    assert [kind for kind, _, _ in fake.faults_applied()] == ["refund_pending", "drop_after"]


@pytest.mark.parametrize("on", ["refund", "refund_lookup"])
@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ({"kind": "garbage", "variant": "bad_status"}, lambda r: r.json()["status"] == "weird"),
        ({"kind": "garbage", "variant": "missing_id"}, lambda r: "id" not in r.json()),
        ({"kind": "garbage", "variant": "not_json"}, lambda r: r.content == b"<html>oops"),
        ({"kind": "other_refund", "variant": "amount"}, lambda r: r.json()["amount"] == 1),
        (
            {"kind": "other_refund", "variant": "charge"},
            lambda r: r.json()["charge"].startswith("ch_another"),
        ),
        ({"kind": "proxy_404"}, lambda r: r.status_code == 404 and r.headers["Content-Type"] == "text/html"),
        ({"kind": "redirect"}, lambda r: r.status_code == 302),
    ],
)
def test_unusable_answers_on_refunds(
    fake: FakeProvider,
    session: requests.Session,
    charged: str,
    on: str,
    fault: dict[str, Any],
    check: Callable[[requests.Response], bool],
) -> None:
    if on == "refund_lookup":
        refund(session, fake, charged, "re-key")
    fake.inject({**fault, "on": on})

    if on == "refund":
        response = refund(session, fake, charged, "re-key")
    else:
        response = session.get(
            f"{fake.url}/{charged}/refunds/re-key", headers=headers(), timeout=10, allow_redirects=False
        )

    assert check(response)
    acted = fault["kind"] in ("garbage", "other_refund") or on == "refund_lookup"
    assert fake.refund_count("re-key") == int(acted)


def test_a_trickled_refund_answer_goes_out_a_byte_at_a_time(
    fake: FakeProvider, session: requests.Session, charged: str
) -> None:
    fake.inject({"kind": "trickle", "on": "refund", "ms": 1})

    response = refund(session, fake, charged, "re-key")

    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    # The fake notes a trickle after its last byte, which the client may have read already.
    [trickle] = wait_until(fake.trickles)
    assert trickle["sent"] == trickle["total"] and not trickle["hung_up"]


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "refund_pending", "on": "refund"},
        {"kind": "refund_pending", "on": "refund", "ms": 1, "variant": "pending"},
        {"kind": "refund_pending", "on": "charge", "ms": 1},
        {"kind": "refund_failed", "on": "refund_lookup"},
        {"kind": "other_refund", "on": "lookup"},
        {"kind": "other_charge", "on": "refund"},
        {"kind": "slow", "on": "refund_lookup", "ms": 1},
    ],
)
def test_refund_faults_are_checked(fake: FakeProvider, fault: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Fault.from_dict(fault)


# Control routes


def test_the_control_routes_show_and_settle_refunds_and_reset_forgets_them(
    fake: FakeProvider, session: requests.Session, charged: str
) -> None:
    fake.inject({"kind": "refund_pending", "on": "refund", "key": "held", "ms": 600_000})
    made = refund(session, fake, charged, "made", 100).json()
    held = refund(session, fake, charged, "held", 200).json()

    shown = session.get(control(fake, "/_fake/refunds"), timeout=10).json()
    settled = session.post(control(fake, "/_fake/refunds/settle"), json={"refund_key": "held"}, timeout=10)
    again = session.post(control(fake, "/_fake/refunds/settle"), json={"refund_key": "held"}, timeout=10)
    bad = session.post(
        control(fake, "/_fake/refunds/settle"), json={"refund_key": "made", "status": "pending"}, timeout=10
    )
    session.post(control(fake, "/_fake/reset"), timeout=10)

    assert shown == {"total": 2, "by_charge": {charged: {"made": made, "held": held}}}
    assert (settled.status_code, settled.json()) == (200, {**held, "status": "succeeded"})
    assert again.status_code == 404
    assert bad.status_code == 400
    assert session.get(control(fake, "/_fake/refunds"), timeout=10).json() == {"total": 0, "by_charge": {}}
    assert fake.refund_request_count("made") == 0
