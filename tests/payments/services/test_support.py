from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from fakeprovider import FakeProvider
from payments import services
from payments.errors import PaymentError
from payments.models import PaymentAttempt, Transaction
from payments.services import ActionOutcome, claims
from tests.support.factories import charge, failed, stale_pending, unknown

pytestmark = pytest.mark.django_db(transaction=True)

Status = Transaction.Status


def refreshed(txn: Transaction) -> Transaction:
    return Transaction.objects.get(pk=txn.pk)


def test_retry_after_provider_outage_charges_once_with_the_stored_key(fake_provider: FakeProvider) -> None:
    fake_provider.stop()
    try:
        txn = charge("tok_visa")
    finally:
        fake_provider.start()
    assert (txn.status, txn.error_type, txn.error_code) == (
        Status.FAILED,
        "provider_error",
        "connection_error",
    )
    assert not any(a.reached_provider for a in txn.attempt_log.all()), "no connection ever opened"
    assert txn.source == "tok_visa", "the token is kept while the charge may be sent again"

    result = services.charge_retry(transaction_id=txn.pk, actor="alice")

    assert (result.outcome, result.status) == (ActionOutcome.SUCCEEDED, Status.SUCCEEDED)
    txn = refreshed(txn)
    assert txn.provider_charge_id.startswith("ch_")
    assert txn.source == "" and txn.next_retry_at is None
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1
    assert fake_provider.total_charges() == 1


def test_retry_failing_again_backs_off_then_needs_review(fake_provider: FakeProvider, settings: Any) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    settings.PAYMENT_MAX_ATTEMPTS = 3
    txn = charge("tok_error")
    first_delay_s = (txn.next_retry_at - timezone.now()).total_seconds()

    services.charge_retry(transaction_id=txn.pk, actor="alice")
    second = refreshed(txn)
    second_delay_s = (second.next_retry_at - timezone.now()).total_seconds()
    result = services.charge_retry(transaction_id=txn.pk, actor="alice")

    assert result.outcome == ActionOutcome.FAILED
    third = refreshed(txn)
    assert 50 < first_delay_s <= 60 and 110 < second_delay_s <= 120, "exponential backoff"
    assert (third.attempts, third.next_retry_at, third.needs_review) == (3, None, True)
    assert third.review_reason == "not charged after 3 tries"
    assert services.charge_retry_next(skip_ids=set(), actor="cron") is None
    assert services.charge_retry(transaction_id=txn.pk, actor="alice").outcome == ActionOutcome.SKIPPED
    assert fake_provider.request_count(txn.provider_idempotency_key) == 3


def test_one_attempt_limit_holds_for_support_and_for_the_api_client(
    fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_ATTEMPTS = 2
    txn = failed(attempts=2)

    result = services.charge_retry(transaction_id=txn.pk, actor="alice")
    assert result.outcome == ActionOutcome.SKIPPED
    request = services.ChargeRequest(amount=1999, currency="USD", source="tok_visa", description="Order")
    Transaction.objects.filter(pk=txn.pk).update(
        idempotency_key="k", request_fingerprint=request.fingerprint()
    )
    with pytest.raises(PaymentError) as raised:
        services.charge_create(client=txn.client, request=request, idempotency_key="k")

    assert raised.value.code == "attempts_exhausted"  # the stored answer, not a new try
    assert fake_provider.request_count(txn.provider_idempotency_key) == 0


def test_lowering_the_attempt_limit_flags_rows_for_review_at_once(settings: Any) -> None:
    waiting = failed(attempts=3, next_retry_at=timezone.now() + timedelta(hours=1))
    settings.PAYMENT_MAX_ATTEMPTS = 3

    assert services.flag_exhausted() == 1

    after = refreshed(waiting)
    assert (after.needs_review, after.next_retry_at) == (True, None)
    assert services.flag_exhausted() == 0


@pytest.mark.parametrize("source", ["tok_visa", "tok_chargeDeclined"])
def test_retry_skips_a_transaction_that_is_not_failed(fake_provider: FakeProvider, source: str) -> None:
    txn = charge(source)
    requests_before = fake_provider.request_count(txn.provider_idempotency_key)

    result = services.charge_retry(transaction_id=txn.pk, actor="alice")

    assert result.outcome == ActionOutcome.SKIPPED
    assert refreshed(txn).status == txn.status
    assert fake_provider.request_count(txn.provider_idempotency_key) == requests_before


def test_two_concurrent_retries_of_one_transaction_send_it_once(
    fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_TIMEOUT_MS = 2000
    fake_provider.latency_ms = 200
    txn = failed()
    barrier = threading.Barrier(2)
    outcomes: list[ActionOutcome] = []

    def retry() -> None:
        barrier.wait()
        outcomes.append(services.charge_retry(transaction_id=txn.pk, actor="alice").outcome)

    threads = [threading.Thread(target=retry) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == [ActionOutcome.SKIPPED, ActionOutcome.SUCCEEDED]
    assert fake_provider.request_count(txn.provider_idempotency_key) == 1
    assert refreshed(txn).attempts == 2


def test_interrupt_before_the_provider_call_puts_the_claimed_row_back(
    fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C cannot be timed to land between the claim and the call; raise it there instead.
    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(claims, "release_db_connection", interrupted)
    txn = failed()

    with pytest.raises(KeyboardInterrupt):
        services.charge_retry(transaction_id=txn.pk, actor="alice")

    after = refreshed(txn)
    assert (after.status, after.updated_at, after.attempts) == (Status.FAILED, txn.updated_at, 1)
    assert fake_provider.request_count(txn.provider_idempotency_key) == 0


def test_reconcile_finds_timed_out_charge_succeeded_without_charging_again(
    fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    txn = charge("tok_timeout")
    assert (txn.status, txn.error_type) == (Status.UNKNOWN, "outcome_unknown")

    result = services.charge_reconcile(transaction_id=txn.pk, actor="alice")

    assert result.outcome == ActionOutcome.SUCCEEDED
    after = refreshed(txn)
    assert after.status == Status.SUCCEEDED and after.provider_charge_id.startswith("ch_")
    assert after.attempts == 1, "a lookup is not a charge attempt"
    assert fake_provider.request_count(txn.provider_idempotency_key) == 1, "no second POST"
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1
    assert list(after.attempt_log.values_list("kind", "http_status")) == [("charge", None), ("lookup", 200)]


def test_reconcile_finds_a_declined_charge_declined(fake_provider: FakeProvider) -> None:
    declined = charge("tok_chargeDeclined")
    # As if the process had died before recording the provider's answer.
    Transaction.objects.filter(pk=declined.pk).update(
        status=Status.PENDING,
        updated_at=timezone.now() - timedelta(minutes=11),
        claimed_at=timezone.now() - timedelta(minutes=11),
    )

    result = services.charge_reconcile(transaction_id=declined.pk, actor="alice")

    assert (result.outcome, refreshed(declined).error_code) == (ActionOutcome.DECLINED, "generic_decline")


def test_reconcile_of_stale_pending_row_unknown_to_provider_makes_it_failed_and_retryable(
    fake_provider: FakeProvider,
) -> None:
    txn = stale_pending()

    result = services.charge_reconcile(transaction_id=txn.pk, actor="alice")

    assert result.outcome == ActionOutcome.NOT_CHARGED
    after = refreshed(txn)
    assert (after.status, after.error_code) == (Status.FAILED, "not_charged")
    assert after.next_retry_at is not None and after.next_retry_at <= timezone.now()
    assert fake_provider.total_charges() == 0
    retried = services.charge_retry_next(skip_ids=set(), actor="cron")
    assert retried is not None and retried.outcome == ActionOutcome.SUCCEEDED
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1


def test_reconcile_leaves_a_pending_row_that_may_still_be_in_flight_alone(
    fake_provider: FakeProvider,
) -> None:
    txn = stale_pending(age=timedelta(seconds=2))  # PAYMENT_RECONCILE_AFTER_S is 5 in tests

    result = services.charge_reconcile(transaction_id=txn.pk, actor="alice")

    assert result.outcome == ActionOutcome.SKIPPED
    assert refreshed(txn).status == Status.PENDING
    assert fake_provider.request_count(txn.provider_idempotency_key) == 0


def test_reconcile_while_provider_is_down_leaves_the_row_as_it_was(fake_provider: FakeProvider) -> None:
    txn = unknown()
    fake_provider.stop()
    try:
        result = services.charge_reconcile(transaction_id=txn.pk, actor="alice")
    finally:
        fake_provider.start()

    assert result.outcome == ActionOutcome.UNAVAILABLE
    after = refreshed(txn)
    assert (after.status, after.error_type, after.attempts) == (Status.UNKNOWN, "outcome_unknown", 1)
    assert (after.next_retry_at, after.updated_at) == (txn.next_retry_at, txn.updated_at)
    assert set(after.attempt_log.values_list("kind", "outcome")) == {("lookup", "connection_error")}


def test_cancel_stores_the_reason_and_forgets_the_token(fake_provider: FakeProvider) -> None:
    txn = failed(error_type="provider_error", error_code="internal_error")

    canceled = services.charge_cancel(transaction_id=txn.pk, reason="  Paid by bank transfer ", actor="alice")

    assert (canceled.status, canceled.status_note) == (Status.CANCELED, "Paid by bank transfer")
    assert refreshed(txn).source == ""
    assert services.charge_retry(transaction_id=txn.pk, actor="alice").outcome == ActionOutcome.SKIPPED


@pytest.mark.parametrize(
    ("fields", "reason", "message"),
    [
        ({"error_type": "provider_error"}, " ", "reason is required"),
        ({"status": "succeeded", "next_retry_at": None}, "duplicate", "already succeeded"),
        ({"status": "unknown", "error_type": "outcome_unknown"}, "duplicate", "reconcile it first"),
        ({"status": "pending"}, "duplicate", "right now"),
    ],
)
def test_cancel_is_refused(fields: dict[str, Any], reason: str, message: str) -> None:
    txn = failed(**fields)

    with pytest.raises(PaymentError, match=message):
        services.charge_cancel(transaction_id=txn.pk, reason=reason, actor="alice")

    assert refreshed(txn).status == txn.status
    assert not PaymentAttempt.objects.exists()


def test_cancel_is_idempotent(fake_provider: FakeProvider) -> None:
    txn = failed()

    first = services.charge_cancel(transaction_id=txn.pk, reason="payer asked", actor="alice")
    again = services.charge_cancel(transaction_id=txn.pk, reason="payer asked twice", actor="bob")

    assert (first.status, again.status, again.status_note) == (
        Status.CANCELED,
        Status.CANCELED,
        "payer asked",
    )


def test_a_lookup_that_finds_nothing_while_an_attempt_may_be_in_flight_proves_nothing(
    fake_provider: FakeProvider,
) -> None:
    txn = unknown(age=timedelta(seconds=1))  # PAYMENT_RECONCILE_AFTER_S is 5 in tests

    result = services.charge_reconcile(transaction_id=txn.pk, actor="alice")

    assert result.outcome == ActionOutcome.UNKNOWN
    assert "in flight until" in result.detail
    after = refreshed(txn)
    assert (after.status, after.error_code) == (Status.UNKNOWN, "provider_timeout")
    assert selectors_cancel_refused(after)


def selectors_cancel_refused(txn: Transaction) -> bool:
    with pytest.raises(PaymentError, match="reconcile it first"):
        services.charge_cancel(transaction_id=txn.pk, reason="duplicate", actor="alice")
    return True
