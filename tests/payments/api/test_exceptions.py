"""The error bodies say what README's answers table says, in one vocabulary."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments import outcomes
from payments.models import Transaction
from tests.support.api import answer_to, charge, error_of


def test_a_reused_key_answers_409_without_the_first_requests_transaction(
    api: APIClient, fake_provider: FakeProvider
) -> None:
    charge(api, key="order-7")

    response = charge(api, key="order-7", amount=2999)

    body = error_of(response, 409, "idempotency_error")
    assert (body["error"]["code"], body["error"]["retryable"]) == ("idempotency_key_reused", False)
    assert body["transaction"] is None, "the key's payment is the first request's, not this one's"
    assert outcomes.answer("key_reused").status == "-", "README's table: nothing of this request is kept"
    assert list(Transaction.objects.values_list("amount", flat=True)) == [1999]
    assert fake_provider.total_charges() == 1


ANSWERS = {
    "declined": ("card_error", "card_declined", {"decline_code": "generic_decline"}),
    "rejected": ("provider_rejected", "provider_rejected", {"provider_code": "invalid_request"}),
    "outcome_unknown": ("outcome_unknown", "provider_timeout", {}),
    "retry_scheduled": ("provider_error", "provider_error", {}),
    "needs_review": ("provider_error", "attempts_exhausted", {}),
    "canceled": ("charge_canceled", "charge_canceled", {}),
}


@pytest.mark.parametrize("answer", ANSWERS)
def test_the_answer_and_its_transaction_speak_one_vocabulary(
    api: APIClient, fake_provider: FakeProvider, settings: Any, answer: str
) -> None:
    error_type, code, reason = ANSWERS[answer]
    row = outcomes.answer(answer)

    response = answer_to(api, fake_provider, settings, answer)

    body = error_of(response, row.http_status, error_type)
    top, own = body["error"], body["transaction"]["error"]
    assert (top["code"], {k: top[k] for k in reason}) == (code, reason)
    assert row.code in (code, "<cause>"), "the code is the answers table's"
    assert own == {"type": error_type, "code": code, "message": top["message"], **reason}
    detail = api.get(f"/api/v1/charges/{body['transaction']['id']}").json()
    assert detail["error"] == own, "a read says what the charge answered"


def test_a_payment_support_flagged_answers_needs_review_as_its_next_step_says(
    api: APIClient, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    failed = charge(api, source="tok_error").json()["transaction"]
    assert failed["next_step"]["action"] == "retry"
    Transaction.objects.filter(pk=failed["id"]).update(review_reason="a support command hit an error")

    flagged = api.get(f"/api/v1/charges/{failed['id']}").json()

    assert flagged["next_step"]["action"] == "review", "retry_failed_payments leaves it alone"
    assert (flagged["error"]["type"], flagged["error"]["code"]) == ("provider_error", "attempts_exhausted")


@pytest.mark.parametrize("answer", ["succeeded", "in_progress"])
def test_a_payment_charged_or_in_flight_has_no_error(
    api: APIClient, fake_provider: FakeProvider, answer: str
) -> None:
    if answer == "in_progress":
        fake_provider.inject({"kind": "status", "status": 503})
        failed = charge(api, key="order-flight", source="tok_error").json()["transaction"]
        Transaction.objects.filter(pk=failed["id"]).update(status=Transaction.Status.PENDING)
        response = charge(api, key="order-flight", source="tok_error")
        txn = error_of(response, 409, "idempotency_error")["transaction"]
    else:
        txn = charge(api).json()

    assert txn["error"] is None
