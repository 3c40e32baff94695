"""A refund's transition table and rules: pure, no database, no sleeps."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command

from payments import refund_transitions, transitions
from payments.models import Refund, Transaction
from payments.refund_transitions import REFUND_TABLE
from payments.transitions import Actor, ActorNotAllowed, Event

Status = Refund.Status
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def refund(status: str, **fields: object) -> Refund:
    fields.setdefault("created_at", NOW - timedelta(minutes=5))
    fields.setdefault("refund_started_at", NOW - timedelta(minutes=5))
    return Refund(status=status, amount=500, currency="USD", **fields)


def test_architecture_doc_shows_the_refund_table_the_code_has() -> None:
    text = ARCHITECTURE.read_text()
    embedded = re.search(
        r"<!-- refund-transitions:begin -->\n(.*?)<!-- refund-transitions:end -->", text, re.S
    )
    assert embedded, "docs/architecture.md lost its refund-transitions markers"
    assert embedded.group(1) == refund_transitions.render_refund_table(), (
        "run `manage.py transition_table --refunds`"
    )


def test_transition_table_command_prints_the_refund_table(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("transition_table", "--refunds")
    printed = capsys.readouterr().out
    assert printed == refund_transitions.render_refund_table()
    assert "admin Refund…" in printed and "reconcile_refunds" in printed


def test_only_a_success_leaves_a_final_refund_status() -> None:
    assert not [key for key in REFUND_TABLE if key[0] == Status.SUCCEEDED]
    assert [key for key in REFUND_TABLE if key[0] == Status.CANCELED] == [(Status.CANCELED, Event.SUCCEEDED)]
    for status in (Status.PENDING, Status.FAILED, Status.UNKNOWN, Status.CANCELED):
        assert REFUND_TABLE[(status, Event.SUCCEEDED)].to == Status.SUCCEEDED, status


def test_who_may_do_what_to_a_refund() -> None:
    assert transitions.claimable(by=Actor.RECONCILE, table=REFUND_TABLE) == (Status.PENDING, Status.UNKNOWN)
    assert transitions.claimable(by=Actor.CLIENT, table=REFUND_TABLE) == (Status.FAILED, Status.UNKNOWN)
    with pytest.raises(ActorNotAllowed):
        transitions.move(Status.PENDING, Event.NOT_FOUND, by=Actor.CLIENT, table=REFUND_TABLE)
    with pytest.raises(ActorNotAllowed):
        transitions.move(Status.FAILED, Event.CANCEL, by=Actor.CLIENT, table=REFUND_TABLE)
    assert transitions.move(Status.UNKNOWN, Event.SEND_FAILED, by=Actor.CLIENT, table=REFUND_TABLE) is None


@pytest.mark.parametrize(
    ("row", "answer", "action"),
    [
        (refund(Status.PENDING, claim_token="abc"), "refund_in_progress", "wait"),
        (refund(Status.PENDING, claim_token="", provider_refund_id="re_1"), "refund_pending", "verify"),
        (refund(Status.UNKNOWN, error_type="outcome_unknown"), "refund_outcome_unknown", "verify"),
        (refund(Status.FAILED, error_type="provider_error"), "refund_not_sent", "review"),
        (refund(Status.FAILED, error_type="refund_failed"), "refund_failed", "none"),
        (refund(Status.SUCCEEDED), "refund_succeeded", "none"),
        (refund(Status.CANCELED, error_type="provider_error"), "refund_canceled", "none"),
    ],
)
def test_each_refund_has_one_answer_and_one_next_step(row: Refund, answer: str, action: str) -> None:
    assert refund_transitions.refund_answer_name(row) == answer
    assert refund_transitions.refund_next_step(row)["action"] == action


def test_a_verify_step_is_due_once_no_attempt_can_be_in_flight(settings: object) -> None:
    row = refund(Status.UNKNOWN)
    assert (
        refund_transitions.refund_next_step(row)["at"]
        == row.refund_started_at + transitions.reconcile_after()
    )


@pytest.mark.parametrize(
    ("status", "refusal"),
    [
        (Transaction.Status.SUCCEEDED, ""),
        (Transaction.Status.UNKNOWN, "not known yet"),
        (Transaction.Status.PENDING, "not known yet"),
        (Transaction.Status.DECLINED, "nothing was charged"),
        (Transaction.Status.FAILED, "nothing was charged"),
        (Transaction.Status.CANCELED, "nothing was charged"),
    ],
)
def test_only_a_succeeded_charge_is_refundable(status: str, refusal: str) -> None:
    said = refund_transitions.refund_refusal(Transaction(status=status))
    assert (refusal in said) if refusal else said == ""
