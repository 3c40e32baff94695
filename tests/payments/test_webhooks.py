"""POST /webhooks/provider over real HTTP: the fake provider, a real server, posts its signed
events to the live server; some are posted by hand, signed with the fake's own signer, some
from several threads at once (the server's threads race to store and apply them)."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import requests

from fakeprovider import FakeProvider
from fakeprovider.events import sign
from payments import selectors, services
from payments.models import ProviderEvent, Refund, Transaction
from payments.services import RefundRequest
from payments.transitions import Actor
from tests.support.events import (
    EVENTS_PATH,
    OTHER_SECRET,
    SECRET,
    charge_at_provider,
    charge_event,
    post_event,
    wait_for_sent,
)
from tests.support.factories import charge, failed, unknown

pytestmark = pytest.mark.django_db(transaction=True)

Status = Transaction.Status


def url(live_server: Any) -> str:
    return live_server.url + EVENTS_PATH


def test_a_charge_the_service_thinks_unknown_settles_at_once_from_its_event(
    events_provider: FakeProvider,
) -> None:
    # Within the window: reconcile_payments would not even look at it yet.
    row = unknown(age=timedelta(seconds=0))
    assert charge_at_provider(events_provider, row.provider_idempotency_key) == 200

    sent = wait_for_sent(events_provider, 1)

    assert [(event["type"], event["status"]) for event in sent] == [("charge.succeeded", 200)]
    row.refresh_from_db()
    assert row.status == Status.SUCCEEDED
    assert row.provider_charge_id.startswith("ch_")
    assert row.attempts == 1, "an event is no charge try"
    stored = ProviderEvent.objects.get(webhook_id=sent[0]["id"])
    assert (stored.effect, stored.transaction_id, stored.type) == ("applied", row.pk, "charge.succeeded")
    assert stored.payload["data"]["idempotency_key"] == row.provider_idempotency_key


def test_a_charge_and_its_event_settle_it_once_whichever_comes_first(events_provider: FakeProvider) -> None:
    # The fake posts the event as it makes the charge: it may beat the charge's own answer
    # (applied to the pending row) or come after it (unchanged).
    txn = charge("tok_visa")
    sent = wait_for_sent(events_provider, 1)

    assert sent[0]["status"] == 200
    assert ProviderEvent.objects.get(webhook_id=sent[0]["id"]).effect in ("applied", "unchanged")
    txn.refresh_from_db()
    assert (txn.status, txn.attempts, txn.attempt_log.count()) == (Status.SUCCEEDED, 1, 1)


def test_a_declined_charge_event_declines_a_failed_row(events_provider: FakeProvider) -> None:
    row = failed("tok_chargeDeclined")
    charge_at_provider(events_provider, row.provider_idempotency_key, source="tok_chargeDeclined")

    wait_for_sent(events_provider, 1)

    row.refresh_from_db()
    assert (row.status, row.error_code, row.source) == (Status.DECLINED, "card_declined", "")


def test_a_duplicated_event_is_stored_once_and_answered_200_both_times(events_provider: FakeProvider) -> None:
    row = unknown()
    events_provider.inject({"kind": "duplicate", "on": "event", "key": row.provider_idempotency_key})
    charge_at_provider(events_provider, row.provider_idempotency_key)

    sent = wait_for_sent(events_provider, 2)

    assert sent[0]["id"] == sent[1]["id"]
    assert [event["status"] for event in sent] == [200, 200]
    assert ProviderEvent.objects.filter(webhook_id=sent[0]["id"]).count() == 1
    row.refresh_from_db()
    assert row.status == Status.SUCCEEDED


def test_a_replayed_event_answers_duplicate_and_changes_nothing(
    live_server: Any, events_provider: Any
) -> None:
    row = unknown()
    body = charge_event("charge.succeeded", row.provider_idempotency_key)
    first = post_event(url(live_server), body, msg_id="msg_replayed")
    Transaction.objects.filter(pk=row.pk).update(review_reason="marked by the test")

    again = post_event(url(live_server), body, msg_id="msg_replayed")

    assert (first.status_code, first.json()["duplicate"], first.json()["effect"]) == (200, False, "applied")
    assert (again.status_code, again.json()["duplicate"], again.json()["effect"]) == (200, True, "applied")
    assert ProviderEvent.objects.count() == 1
    row.refresh_from_db()
    assert (row.status, row.review_reason) == (Status.SUCCEEDED, "marked by the test")


def test_reordered_events_each_settle_their_own_charge(events_provider: FakeProvider) -> None:
    held, later = unknown(), unknown()
    events_provider.inject({"kind": "reorder", "on": "event", "key": held.provider_idempotency_key})
    charge_at_provider(events_provider, held.provider_idempotency_key)
    charge_at_provider(events_provider, later.provider_idempotency_key)

    sent = wait_for_sent(events_provider, 2)

    assert [event["key"] for event in sent] == [later.provider_idempotency_key, held.provider_idempotency_key]
    for row in (held, later):
        row.refresh_from_db()
        assert row.status == Status.SUCCEEDED


@pytest.mark.parametrize(
    ("fault", "code"), [("stale", "stale_timestamp"), ("bad_signature", "invalid_signature")]
)
def test_a_stale_or_forged_event_is_refused_401_and_nothing_is_stored(
    events_provider: FakeProvider, fault: str, code: str
) -> None:
    row = unknown()
    events_provider.inject({"kind": fault, "on": "event"})
    charge_at_provider(events_provider, row.provider_idempotency_key)

    sent = wait_for_sent(events_provider, 1)

    assert sent[0]["status"] == 401
    assert ProviderEvent.objects.count() == 0
    row.refresh_from_db()
    assert row.status == Status.UNKNOWN


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"webhook-signature": "v1,AAAA"}, "invalid_signature"),
        ({"webhook-signature": "garbage"}, "invalid_signature"),
        ({"webhook-signature": ""}, "missing_signature_headers"),
        ({"webhook-timestamp": "soon"}, "invalid_timestamp"),
        ({"body": b'{"type": "charge.succeeded", "data": {}} '}, "invalid_signature"),
    ],
)
def test_unverifiable_events_answer_401_with_the_reason(
    live_server: Any, settings: Any, change: dict, code: str
) -> None:
    settings.PAYMENT_WEBHOOK_SECRET = (SECRET,)
    body = b'{"type": "charge.succeeded", "data": {}}'
    stamp = int(time.time())
    headers = {
        "webhook-id": "msg_x",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(SECRET, "msg_x", stamp, body),
    }
    raw = change.pop("body", body)
    headers.update(change)

    answer = requests.post(url(live_server), data=raw, headers=headers, timeout=10)

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == code
    assert answer.json()["error"]["type"] == "authentication_error"
    assert ProviderEvent.objects.count() == 0


def test_every_secret_of_a_rotation_is_accepted(live_server: Any, settings: Any) -> None:
    settings.PAYMENT_WEBHOOK_SECRET = (OTHER_SECRET, SECRET)
    row = unknown()

    answer = post_event(url(live_server), charge_event("charge.succeeded", row.provider_idempotency_key))

    assert answer.status_code == 200
    row.refresh_from_db()
    assert row.status == Status.SUCCEEDED


def test_without_a_secret_the_endpoint_answers_404(live_server: Any, settings: Any) -> None:
    settings.PAYMENT_WEBHOOK_SECRET = ()

    answer = post_event(url(live_server), charge_event("charge.succeeded", "ps_x"))

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "webhooks_not_configured"


def test_a_declined_event_after_succeeded_changes_nothing(live_server: Any, settings: Any) -> None:
    settings.PAYMENT_WEBHOOK_SECRET = (SECRET,)
    txn = charge("tok_visa")
    before = Transaction.objects.values().get(pk=txn.pk)
    body = charge_event("charge.declined", txn.provider_idempotency_key, id=txn.provider_charge_id)

    answer = post_event(url(live_server), body)

    assert answer.status_code == 200
    assert answer.json()["effect"] == "unchanged"
    assert answer.json()["detail"].startswith("contradicts the final succeeded")
    after = Transaction.objects.values().get(pk=txn.pk)
    assert {k: v for k, v in after.items() if k != "updated_at"} == {
        k: v for k, v in before.items() if k != "updated_at"
    }


def test_a_success_after_cancel_is_recorded_and_flagged(live_server: Any, settings: Any) -> None:
    settings.PAYMENT_WEBHOOK_SECRET = (SECRET,)
    row = failed()
    services.charge_cancel(transaction_id=row.pk, reason="customer asked", actor="tests")

    answer = post_event(url(live_server), charge_event("charge.succeeded", row.provider_idempotency_key))

    assert answer.json()["effect"] == "applied"
    row.refresh_from_db()
    assert (row.status, row.review_reason) == (Status.SUCCEEDED, "charged after cancel")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"amount": 1}, "amount 1, ours 1999"),
        ({"currency": "JPY"}, "currency JPY, ours USD"),
        ({"status": "declined"}, "with status 'declined'"),
        ({"type": "charge.disputed"}, "unknown event type"),
    ],
)
def test_an_event_that_does_not_fit_only_makes_an_unknown_charge_due_for_a_lookup(
    live_server: Any, settings: Any, change: dict, why: str
) -> None:
    settings.PAYMENT_WEBHOOK_SECRET = (SECRET,)
    row = unknown(age=timedelta(seconds=0))
    assert row not in selectors.to_reconcile(), "within the window: not due yet"
    body = charge_event("charge.succeeded", row.provider_idempotency_key)
    if "type" in change:
        body["type"] = change["type"]
    else:
        body["data"].update(change)

    answer = post_event(url(live_server), body)

    assert answer.status_code == 200
    assert answer.json()["effect"] == "lookup"
    assert why in answer.json()["detail"]
    row.refresh_from_db()
    assert (row.status, row.error_code) == (Status.UNKNOWN, "provider_timeout")
    assert row.lookup_requested_at is not None
    assert row in selectors.to_reconcile()


def test_an_event_for_another_charge_id_than_ours_changes_nothing(live_server: Any, settings: Any) -> None:
    settings.PAYMENT_WEBHOOK_SECRET = (SECRET,)
    txn = charge("tok_visa")

    answer = post_event(url(live_server), charge_event("charge.succeeded", txn.provider_idempotency_key))

    assert answer.json()["effect"] == "lookup"
    assert f"ours {txn.provider_charge_id}" in answer.json()["detail"]


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", json.dumps({"type": "charge.succeeded"}).encode()])
def test_a_verified_event_that_is_not_one_is_stored_unplaced(
    live_server: Any, settings: Any, body: bytes
) -> None:
    settings.PAYMENT_WEBHOOK_SECRET = (SECRET,)

    answer = post_event(url(live_server), body, msg_id="msg_odd")

    assert (answer.status_code, answer.json()["effect"]) == (200, "unplaced")
    assert ProviderEvent.objects.get(webhook_id="msg_odd").effect == "unplaced"


def test_an_event_for_a_key_of_nobody_is_stored_unplaced(live_server: Any, settings: Any) -> None:
    settings.PAYMENT_WEBHOOK_SECRET = (SECRET,)

    answer = post_event(url(live_server), charge_event("charge.succeeded", "ps_nobody"))

    assert answer.json()["effect"] == "unplaced"
    assert "no charge of ours" in answer.json()["detail"]


def test_webhook_ids_are_compared_byte_for_byte(live_server: Any, settings: Any) -> None:
    settings.PAYMENT_WEBHOOK_SECRET = (SECRET,)
    for msg_id in ("msg_Ab", "msg_aB"):
        answer = post_event(url(live_server), charge_event("charge.succeeded", "ps_nobody"), msg_id=msg_id)
        assert answer.json()["duplicate"] is False


def test_a_refund_the_provider_holds_settles_from_its_event(events_provider: FakeProvider) -> None:
    txn = charge("tok_visa")
    wait_for_sent(events_provider, 1)
    events_provider.inject({"kind": "refund_pending", "on": "refund", "ms": 3_600_000})
    refund = services.refund_create(
        charge_id=txn.pk,
        client=txn.client,
        request=RefundRequest(amount=500, reason="requested_by_customer"),
        idempotency_key=None,
        by=Actor.CLIENT,
        requested_by="API client shop",
    ).refund
    assert refund.status == Refund.Status.PENDING and refund.held_by_provider

    events_provider.settle_refund(refund.provider_idempotency_key)
    sent = wait_for_sent(events_provider, 2)

    assert (sent[1]["type"], sent[1]["status"]) == ("refund.succeeded", 200)
    refund.refresh_from_db()
    assert refund.status == Refund.Status.SUCCEEDED
    assert ProviderEvent.objects.get(webhook_id=sent[1]["id"]).refund_id == refund.pk


def test_a_refund_failed_event_after_succeeded_changes_nothing(
    events_provider: FakeProvider, live_server: Any
) -> None:
    txn = charge("tok_visa")
    refund = services.refund_create(
        charge_id=txn.pk,
        client=txn.client,
        request=RefundRequest(amount=500, reason="requested_by_customer"),
        idempotency_key=None,
        by=Actor.CLIENT,
        requested_by="API client shop",
    ).refund
    body = {
        "type": "refund.failed",
        "data": {
            "idempotency_key": refund.provider_idempotency_key,
            "id": refund.provider_refund_id,
            "status": "failed",
            "amount": 500,
            "currency": "USD",
        },
    }

    answer = post_event(url(live_server), body)

    assert answer.json()["effect"] == "unchanged"
    refund.refresh_from_db()
    assert refund.status == Refund.Status.SUCCEEDED


def post_at_once(target: str, posts: list[tuple[dict, str]]) -> list[requests.Response]:
    """POST each (body, webhook id) from its own thread, all released at one barrier: the
    server's threads race to store and apply them."""
    barrier = threading.Barrier(len(posts))
    answers: list[Any] = [None] * len(posts)

    def one(index: int, body: dict, msg_id: str) -> None:
        barrier.wait(timeout=10)
        answers[index] = post_event(target, body, msg_id=msg_id)

    threads = [threading.Thread(target=one, args=(i, *post)) for i, post in enumerate(posts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(answer is not None for answer in answers), "a post did not finish"
    return answers


ROUNDS = 5


def test_one_event_posted_twice_at_once_is_stored_and_applied_once(live_server: Any, settings: Any) -> None:
    settings.PAYMENT_WEBHOOK_SECRET = (SECRET,)
    for round_ in range(ROUNDS):
        row = unknown()
        body = charge_event("charge.succeeded", row.provider_idempotency_key)

        answers = post_at_once(url(live_server), [(body, f"msg_race{round_}")] * 3)

        assert [answer.status_code for answer in answers] == [200, 200, 200]
        assert sorted(answer.json()["duplicate"] for answer in answers) == [False, True, True]
        assert {answer.json()["effect"] for answer in answers} == {"applied"}
        assert ProviderEvent.objects.filter(webhook_id=f"msg_race{round_}").count() == 1
        row.refresh_from_db()
        assert (row.status, row.attempts) == (Status.SUCCEEDED, 1)
        assert list(row.client_events.values_list("type", flat=True)) == ["charge.succeeded"]


def test_one_fact_under_several_event_ids_at_once_settles_the_charge_once(
    live_server: Any, settings: Any
) -> None:
    # A provider that resends a fact under a new id: each is its own event, one is the change.
    settings.PAYMENT_WEBHOOK_SECRET = (SECRET,)
    for round_ in range(ROUNDS):
        row = unknown()
        body = charge_event("charge.succeeded", row.provider_idempotency_key)

        answers = post_at_once(url(live_server), [(body, f"msg_fact{round_}_{i}") for i in range(3)])

        assert [answer.status_code for answer in answers] == [200, 200, 200]
        assert [answer.json()["duplicate"] for answer in answers] == [False, False, False]
        assert sorted(answer.json()["effect"] for answer in answers) == ["applied", "unchanged", "unchanged"]
        row.refresh_from_db()
        assert (row.status, row.attempts) == (Status.SUCCEEDED, 1)
        assert list(row.client_events.values_list("type", flat=True)) == ["charge.succeeded"]


def test_contradicting_events_at_once_settle_once_and_the_loser_changes_nothing(
    live_server: Any, settings: Any
) -> None:
    settings.PAYMENT_WEBHOOK_SECRET = (SECRET,)
    for round_ in range(ROUNDS):
        row = unknown()
        key = row.provider_idempotency_key
        posts = [
            (charge_event("charge.succeeded", key), f"msg_ok{round_}"),
            (charge_event("charge.declined", key), f"msg_no{round_}"),
        ]

        answers = post_at_once(url(live_server), posts)

        effects = sorted(answer.json()["effect"] for answer in answers)
        assert effects == ["applied", "unchanged"], [answer.json() for answer in answers]
        row.refresh_from_db()
        winner = answers[0] if answers[0].json()["effect"] == "applied" else answers[1]
        settled = Status.SUCCEEDED if winner is answers[0] else Status.DECLINED
        assert row.status == settled
        assert list(row.client_events.values_list("type", flat=True)) == [f"charge.{settled}"]
