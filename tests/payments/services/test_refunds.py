"""The refund path against the fake provider as a real HTTP server: money goes back exactly
once, never more than was charged, and every answer says what happened."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from fakeprovider import FakeProvider
from payments import services
from payments.errors import (
    IdempotencyConflict,
    NotRefundable,
    PaymentError,
    RefundTooLarge,
    RefundUnavailable,
)
from payments.models import PaymentAttempt, Refund, Transaction
from payments.services import ActionOutcome, RefundRequest
from payments.transitions import Actor
from tests.support.factories import charge, unknown
from tests.support.network import closed_port

pytestmark = pytest.mark.django_db(transaction=True)

ACTOR = "tests"


def refund(
    txn: Transaction,
    amount: int | None = None,
    *,
    key: str | None = None,
    reason: str = "requested_by_customer",
) -> Refund:
    """Refund as the API does; return the refund however it ended (None: nothing was kept)."""
    try:
        return services.refund_create(
            charge_id=txn.pk,
            client=txn.client,
            request=RefundRequest(amount=amount, reason=reason),
            idempotency_key=key,
            by=Actor.CLIENT,
            requested_by="API client shop",
        ).refund
    except PaymentError as error:
        if error.refund is None:
            raise
        return Refund.objects.get(pk=error.refund.pk)


def answer(txn: Transaction, amount: int | None = None, **kwargs: Any) -> PaymentError:
    with pytest.raises(PaymentError) as raised:
        services.refund_create(
            charge_id=txn.pk,
            client=txn.client,
            request=RefundRequest(amount=amount, reason="requested_by_customer"),
            idempotency_key=kwargs.get("key"),
            by=Actor.CLIENT,
            requested_by="API client shop",
        )
    return raised.value


def age_refund(row: Refund, seconds: int = 60) -> None:
    """Move the refund's last call (and claim) into the past, as if the window had passed."""
    past = timezone.now() - timedelta(seconds=seconds)
    Refund.objects.filter(pk=row.pk).update(refund_started_at=past, claimed_at=past)


def test_a_full_refund_is_made_once_and_shown_on_the_charge(fake_provider: FakeProvider) -> None:
    txn = charge("tok_visa")
    made = refund(txn)
    assert (made.status, made.amount, made.currency) == ("succeeded", 1999, "USD")
    assert made.provider_refund_id.startswith("re_")
    assert fake_provider.refund_count(made.provider_idempotency_key) == 1
    assert services.refunded(txn) == 1999 and services.refundable(txn) == 0
    attempts = PaymentAttempt.objects.filter(refund=made)
    assert [(a.kind, a.outcome) for a in attempts] == [("refund", "succeeded")]


def test_partial_refunds_then_the_rest_and_never_more(fake_provider: FakeProvider) -> None:
    txn = charge("tok_visa")
    assert refund(txn, 500).status == "succeeded"
    assert refund(txn, 499).status == "succeeded"
    rest = refund(txn)
    assert (rest.status, rest.amount) == ("succeeded", 1000)
    error = answer(txn, 1)
    assert isinstance(error, RefundTooLarge) and error.extra == {"refundable": 0}
    assert Refund.objects.filter(transaction=txn).count() == 3, "a refused refund writes nothing"
    assert fake_provider.total_refunds() == 3


def test_more_than_is_left_is_refused_before_anything_is_sent(fake_provider: FakeProvider) -> None:
    txn = charge("tok_visa")
    error = answer(txn, 2000)
    assert isinstance(error, RefundTooLarge) and error.http_status == 422
    assert error.extra == {"refundable": 1999}
    assert not Refund.objects.exists() and fake_provider.total_refunds() == 0


@pytest.mark.parametrize("source", ["tok_chargeDeclined", "timeout"])
def test_only_a_succeeded_charge_can_be_refunded(fake_provider: FakeProvider, source: str) -> None:
    txn = charge("tok_chargeDeclined") if source != "timeout" else unknown()
    error = answer(txn)
    assert isinstance(error, NotRefundable) and error.http_status == 409
    assert not Refund.objects.exists()


def test_the_same_key_replays_the_refund_and_another_body_is_a_conflict(fake_provider: FakeProvider) -> None:
    txn = charge("tok_visa")
    first = refund(txn, 700, key="rf-1")
    again = services.refund_create(
        charge_id=txn.pk,
        client=txn.client,
        request=RefundRequest(amount=700, reason="requested_by_customer"),
        idempotency_key="rf-1",
        by=Actor.CLIENT,
        requested_by="x",
    )
    assert again.replayed and again.refund.pk == first.pk
    assert fake_provider.refund_request_count(first.provider_idempotency_key) == 1
    assert isinstance(answer(txn, 800, key="rf-1"), IdempotencyConflict)
    assert Refund.objects.count() == 1


def test_a_timeout_is_unknown_holds_its_amount_and_reconcile_finds_it(fake_provider: FakeProvider) -> None:
    txn = charge("tok_visa")
    fake_provider.inject_many([{"kind": "drop_after", "on": "refund"}] * 4)  # made, every answer lost
    made = refund(txn, 1500)
    assert made.status == "unknown" and made.error_type == "outcome_unknown"
    assert services.refundable(txn) == 499, "an unknown refund counts against what is left"
    assert isinstance(answer(txn, 500), RefundTooLarge)
    result = services.refund_reconcile(refund_id=made.pk, actor=ACTOR)
    assert result.outcome == ActionOutcome.SUCCEEDED
    assert Refund.objects.get(pk=made.pk).status == "succeeded"
    assert fake_provider.refund_count(made.provider_idempotency_key) == 1, "looked up, never sent again"


def test_a_5xx_on_a_refund_proves_nothing_and_a_lookup_decides(fake_provider: FakeProvider) -> None:
    txn = charge("tok_visa")
    fake_provider.inject({"kind": "status", "on": "refund", "status": 500})
    made = refund(txn, 300)
    assert made.status == "unknown", "a 5xx on a refund is not 'not refunded'"
    found_nothing = services.refund_reconcile(refund_id=made.pk, actor=ACTOR)
    assert found_nothing.outcome == ActionOutcome.UNKNOWN, "before the window: proves nothing"
    assert Refund.objects.get(pk=made.pk).status == "unknown"
    age_refund(made)
    proved = services.refund_reconcile(refund_id=made.pk, actor=ACTOR)
    assert proved.outcome == ActionOutcome.NOT_REFUNDED
    row = Refund.objects.get(pk=made.pk)
    assert (row.status, row.error_code) == ("failed", "not_refunded")
    assert services.refundable(txn) == 1999
    resent = refund(txn, 300, key=None)  # a new refund is its own
    assert resent.status == "succeeded"


def test_a_refund_not_sent_is_sent_again_with_the_same_key(
    fake_provider: FakeProvider, settings: Any
) -> None:
    txn = charge("tok_visa")
    url = settings.PAYMENT_SERVICE_URL
    settings.PAYMENT_SERVICE_URL = f"http://127.0.0.1:{closed_port()}/v1/charges"
    made = refund(txn, 400, key="rf-x")
    assert (made.status, made.error_type) == ("failed", "provider_error")
    assert services.refundable(txn) == 1999, "a refund known not made holds nothing"
    settings.PAYMENT_SERVICE_URL = url
    again = refund(txn, 400, key="rf-x")
    assert again.pk == made.pk and again.status == "succeeded"
    assert fake_provider.refund_count(made.provider_idempotency_key) == 1


def test_a_pending_refund_is_held_and_settled_by_reconcile(fake_provider: FakeProvider) -> None:
    txn = charge("tok_visa")
    fake_provider.inject({"kind": "refund_pending", "on": "refund", "ms": 60_000})
    made = refund(txn, 250)
    assert made.status == "pending" and made.held_by_provider
    assert services.refund_reconcile(refund_id=made.pk, actor=ACTOR).outcome == ActionOutcome.UNKNOWN
    assert Refund.objects.get(pk=made.pk).held_by_provider, "still held by the provider"
    fake_provider.settle_refund(made.provider_idempotency_key, "succeeded")
    assert services.refund_reconcile(refund_id=made.pk, actor=ACTOR).outcome == ActionOutcome.SUCCEEDED
    assert Refund.objects.get(pk=made.pk).status == "succeeded"


def test_a_refused_refund_is_failed_and_final(fake_provider: FakeProvider) -> None:
    txn = charge("tok_visa")
    fake_provider.inject({"kind": "refund_failed", "on": "refund"})
    made = refund(txn, 250, key="rf-f")
    assert (made.status, made.error_type) == ("failed", "refund_failed")
    error = answer(txn, 250, key="rf-f")
    assert error.answer_name == "refund_failed" and error.replayed
    assert fake_provider.refund_request_count(made.provider_idempotency_key) == 1, "never sent again"


def test_breaker_open_keeps_nothing(fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    from payments import provider

    txn = charge("tok_visa")
    breaker = provider.get_client().breaker
    monkeypatch.setattr(breaker, "failure_threshold", 1)
    breaker.record_failure()
    error = answer(txn, 100)
    assert isinstance(error, RefundUnavailable) and error.code == "circuit_open"
    assert not Refund.objects.exists() and fake_provider.total_refunds() == 0


def test_a_success_for_a_refund_given_up_on_is_recorded_and_flagged(fake_provider: FakeProvider) -> None:
    """A claim that lost its refund (support canceled it meanwhile) still records the provider's
    success: a fact, never dropped."""
    from payments.provider import Outcome, ProviderResult
    from payments.services.refund_settlement import settle_refund

    txn = charge("tok_visa")
    fake_provider.inject_many([{"kind": "drop_after", "on": "refund"}] * 4)
    made = refund(txn, 900)
    stale_claim = Refund.objects.get(pk=made.pk)
    Refund.objects.filter(pk=made.pk).update(
        status="canceled", error_type="provider_error", error_code="not_refunded", claim_token="other"
    )
    result = ProviderResult(outcome=Outcome.SUCCEEDED, refund_id="re_late")
    settled = settle_refund(claimed=stale_claim, result=result, by=Actor.RECONCILE, kind="refund_lookup")
    assert (settled.status, settled.provider_refund_id) == ("succeeded", "re_late")
    assert settled.review_reason == "refunded after the service gave up on it"


def test_reconcile_refunds_settles_unknown_refunds_and_exits_as_its_siblings(
    fake_provider: FakeProvider,
) -> None:
    import json
    from io import StringIO

    from django.core.management import call_command

    txn = charge("tok_visa")
    fake_provider.inject_many([{"kind": "drop_after", "on": "refund"}] * 4)
    made = refund(txn, 800)
    assert made.status == "unknown"
    dry = StringIO()
    call_command("reconcile_refunds", "--dry-run", "--json", stdout=dry)
    assert [row["id"] for row in json.loads(dry.getvalue())["transactions"]] == [str(made.pk)]
    assert Refund.objects.get(pk=made.pk).status == "unknown", "a dry run changes nothing"
    out = StringIO()
    call_command("reconcile_refunds", "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert summary["counts"] == {"succeeded": 1} and summary["errors"] == []
    assert Refund.objects.get(pk=made.pk).status == "succeeded"
    assert fake_provider.refund_count(made.provider_idempotency_key) == 1


def test_reconcile_refunds_refuses_an_id_that_is_no_refund(fake_provider: FakeProvider) -> None:
    import uuid

    from django.core.management import CommandError, call_command

    txn = charge("tok_visa")  # a charge's id is not a refund's
    with pytest.raises(CommandError, match="No refund with id") as raised:
        call_command("reconcile_refunds", "--id", str(txn.pk))
    assert raised.value.returncode == 2
    with pytest.raises(CommandError, match="No refund with id"):
        call_command("reconcile_refunds", "--id", str(uuid.uuid4()))


def test_a_refund_whose_answer_cannot_be_saved_is_answered_unknown_without_a_query(
    fake_provider: FakeProvider, django_assert_num_queries: Any
) -> None:
    """The database fails after the provider refunded: the caller hears 504 unknown, and the
    answer (the refund beside its charge, amount_refunded included) needs no database."""
    from django.db import OperationalError

    from payments import failpoints
    from payments.api.exceptions import payment_error_response

    txn = charge("tok_visa")
    refund(txn, 300)  # one refund before: the charge's amount_refunded has something to count

    def database_down() -> None:
        raise OperationalError("the database went away")

    with failpoints.armed("refund.settle", database_down):
        error = answer(txn, 200)
    assert (error.answer_name, error.code) == ("refund_outcome_unknown", "settle_failed")
    with django_assert_num_queries(0):
        body = payment_error_response(error).data
    assert (body["refund"]["status"], body["transaction"]["amount_refunded"]) == ("unknown", 300)
    assert Refund.objects.get(pk=body["refund"]["id"]).status == "pending", "reconcile_refunds settles it"
