"""The error bodies say what README's answers table says, in one vocabulary."""

from __future__ import annotations

from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from payments import outcomes
from payments.models import Transaction
from tests.payments.api.helpers import charge, error_of


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
