"""The transition table and the rules about a payment: pure, no database, no sleeps."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command

from payments import transitions
from payments.models import Transaction
from payments.transitions import TABLE, Actor, ActorNotAllowed, Event

Status = Transaction.Status
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def row(status: str, **fields: object) -> Transaction:
    fields.setdefault("created_at", NOW - timedelta(minutes=5))
    fields.setdefault("updated_at", NOW - timedelta(minutes=5))
    return Transaction(status=status, amount=1999, currency="USD", **fields)


def test_architecture_doc_shows_the_table_the_code_has() -> None:
    text = ARCHITECTURE.read_text()
    embedded = re.search(r"<!-- transitions:begin -->\n(.*?)<!-- transitions:end -->", text, re.S)
    assert embedded, "docs/architecture.md lost its transitions markers"
    assert embedded.group(1) == transitions.render_table(), (
        "run `manage.py transition_table` and paste it between the markers"
    )


def test_transition_table_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("transition_table")
    assert capsys.readouterr().out == transitions.render_table()


def test_no_row_leaves_a_final_status_but_a_success_is_recorded_even_after_cancel() -> None:
    assert not [key for key in TABLE if key[0] in (Status.SUCCEEDED, Status.DECLINED)]
    assert [key for key in TABLE if key[0] == Status.CANCELED] == [(Status.CANCELED, Event.SUCCEEDED)]
    assert {Event.SUCCEEDED, Event.DECLINED} == transitions.FACTS


def test_an_unknown_outcome_is_never_canceled_nor_failed_without_a_lookup() -> None:
    moves_from_unknown = {found.to for (status, _), found in TABLE.items() if status == Status.UNKNOWN}
    assert moves_from_unknown == {Status.PENDING, Status.SUCCEEDED, Status.DECLINED}
    # Only a reconcile's lookup turns a claimed row into "not charged".
    assert {event for (_, event), found in TABLE.items() if found.to == Status.FAILED} == {
        Event.SEND_FAILED,
        Event.NOT_FOUND,
    }
    assert TABLE[(Status.PENDING, Event.NOT_FOUND)].by == {Actor.RECONCILE}


def test_every_event_and_every_actor_is_in_the_table() -> None:
    from payments.refund_transitions import REFUND_TABLE

    # Every event is a charge's, but provider_pending: only a refund is held by the provider.
    assert {event for _, event in TABLE} == set(Event) - {Event.PROVIDER_PENDING}
    assert {event for _, event in REFUND_TABLE} == set(Event)
    assert set().union(*(found.by for found in TABLE.values())) == set(Actor)


@pytest.mark.parametrize(
    ("actor", "statuses"),
    [
        (Actor.CLIENT, {Status.PENDING, Status.FAILED, Status.UNKNOWN}),
        (Actor.RETRY, {Status.FAILED}),
        (Actor.RECONCILE, {Status.PENDING, Status.UNKNOWN}),
        (Actor.SUPPORT, set()),
    ],
)
def test_who_may_claim_what(actor: Actor, statuses: set[str]) -> None:
    assert set(transitions.claimable(by=actor)) == statuses


def test_move_gives_the_target_nothing_for_a_missing_move_and_refuses_a_wrong_actor() -> None:
    assert transitions.move(Status.PENDING, Event.SUCCEEDED, by=Actor.RECONCILE) == Status.SUCCEEDED
    assert transitions.move(Status.PENDING, Event.PUT_BACK, by=Actor.RETRY) == transitions.BEFORE_CLAIM
    assert transitions.move(Status.SUCCEEDED, Event.DECLINED, by=Actor.CLIENT) is None
    assert transitions.move(Status.UNKNOWN, Event.CANCEL, by=Actor.SUPPORT) is None
    with pytest.raises(ActorNotAllowed, match="retry may not claim a unknown payment"):
        transitions.move(Status.UNKNOWN, Event.CLAIM, by=Actor.RETRY)
    with pytest.raises(ActorNotAllowed):
        transitions.move(Status.PENDING, Event.NOT_FOUND, by=Actor.CLIENT)


@pytest.mark.parametrize(
    ("status", "refusal"),
    [
        (Status.FAILED, ""),
        (Status.UNKNOWN, "the provider may have charged it; reconcile it first"),
        (Status.PENDING, "it is being sent to the provider right now; try again in a moment"),
        (Status.SUCCEEDED, "it is already succeeded"),
        (Status.DECLINED, "it is already declined"),
        (Status.CANCELED, "it is already canceled"),
    ],
)
def test_cancel_refusal(status: str, refusal: str) -> None:
    assert transitions.cancel_refusal(row(status)) == refusal


def test_attempts_left_follows_the_setting(settings: object) -> None:
    settings.PAYMENT_MAX_ATTEMPTS = 3
    assert transitions.attempts_left(row(Status.FAILED, attempts=2))
    assert not transitions.attempts_left(row(Status.FAILED, attempts=3))


def test_abandoned_is_pending_and_claimed_longer_ago_than_the_window(settings: object) -> None:
    settings.PAYMENT_RECONCILE_AFTER_S = 70
    old = NOW - timedelta(seconds=71)
    assert transitions.abandoned(row(Status.PENDING, claimed_at=old), now=NOW)
    assert not transitions.abandoned(row(Status.PENDING, claimed_at=NOW - timedelta(seconds=69)), now=NOW)
    assert not transitions.abandoned(row(Status.UNKNOWN, claimed_at=old), now=NOW)


def test_next_step(settings: object) -> None:
    settings.PAYMENT_MAX_ATTEMPTS = 3
    settings.PAYMENT_RECONCILE_AFTER_S = 70
    retry_at = NOW + timedelta(minutes=2)
    started = NOW - timedelta(seconds=10)
    assert transitions.next_step(row(Status.PENDING)) == {"action": "wait", "at": None}
    assert transitions.next_step(row(Status.UNKNOWN, charge_started_at=started)) == {
        "action": "verify",
        "at": started + timedelta(seconds=70),
    }
    assert transitions.next_step(row(Status.FAILED, attempts=1, next_retry_at=retry_at)) == {
        "action": "retry",
        "at": retry_at,
    }
    for spent in (
        row(Status.FAILED, attempts=3, next_retry_at=retry_at),
        row(Status.FAILED, attempts=1, next_retry_at=None),
        row(Status.FAILED, attempts=1, next_retry_at=retry_at, review_reason="a command hit an error"),
    ):
        assert transitions.next_step(spent) == {"action": "review", "at": None}
    for final in Transaction.TERMINAL_STATUSES:
        assert transitions.next_step(row(final)) == {"action": "none", "at": None}
