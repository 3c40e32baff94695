"""Refund… on a transaction's page, against the fake provider as a real HTTP server: the
permission, the form and its confirmation, what the message says, the history, and a
refund's own Reconcile and Cancel refund."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from fakeprovider import FakeProvider
from payments import services
from payments.admin.transaction import TransactionAdmin
from payments.models import Refund, Transaction
from payments.services import SUPPORT_GROUP_NAME
from payments.transitions import Actor
from tests.support.factories import charge, unknown
from tests.support.network import closed_port

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/payments/transaction/"
KEY = re.compile(r'name="key" value="(admin-[0-9a-f-]+)"')


def page(client: Client, txn: Transaction) -> str:
    response = client.get(f"{CHANGELIST}{txn.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def text_of(body: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def banner_of(body: str) -> str:
    start = body.index('id="payment-state"')
    return text_of(body[start : body.index("</section>", start)])


def history_of(body: str) -> str:
    start = body.index('id="refunds"')
    return text_of(body[start : body.index("</section>", start)])


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def form_key(client: Client, txn: Transaction) -> str:
    response = client.get(f"{CHANGELIST}{txn.pk}/refund/")
    assert response.status_code == 200
    return KEY.search(response.content.decode())[1]


def review(client: Client, txn: Transaction, key: str, **fields: str) -> Any:
    data = {"amount": "", "reason": "requested_by_customer", "note": "", "key": key, **fields}
    return client.post(f"{CHANGELIST}{txn.pk}/refund/", data)


def confirm(client: Client, txn: Transaction, key: str, **fields: str) -> Any:
    data = {"reason": "requested_by_customer", "note": "", "key": key, "confirm": "yes", **fields}
    return client.post(f"{CHANGELIST}{txn.pk}/refund/", data, follow=True)


def member_without_refunds() -> Client:
    """A support member's permissions less refund_transaction."""
    user = get_user_model().objects.create_user("bob", password="pw-bob", is_staff=True)
    permissions = Group.objects.get(name=SUPPORT_GROUP_NAME).permissions.exclude(
        codename="refund_transaction"
    )
    user.user_permissions.add(*permissions)
    client = Client()
    assert client.login(username="bob", password="pw-bob")
    return client


def viewer() -> Client:
    """Staff who may only look at payments."""
    user = get_user_model().objects.create_user("viewer", password="pw-viewer", is_staff=True)
    user.user_permissions.add(
        *Group.objects.get(name=SUPPORT_GROUP_NAME).permissions.filter(codename__startswith="view_")
    )
    client = Client()
    assert client.login(username="viewer", password="pw-viewer")
    return client


def test_refund_needs_its_own_permission(support: Client, fake_provider: FakeProvider) -> None:
    txn = charge("tok_visa")
    bob = member_without_refunds()

    assert "Refund…" in banner_of(page(support, txn))
    body = page(bob, txn)
    assert "Refund…" not in body and "Cannot refund" not in body
    assert "Refunds Charged 19.99 USD; refunded 0.00 USD; left to refund 19.99 USD" in history_of(body)
    assert bob.get(f"{CHANGELIST}{txn.pk}/refund/").status_code == 403
    key = form_key(support, txn)
    assert confirm(bob, txn, key, amount="5.00").status_code == 403
    assert not Refund.objects.exists() and fake_provider.total_refunds() == 0


def test_a_partial_refund_then_the_rest(support: Client, fake_provider: FakeProvider) -> None:
    txn = charge("tok_visa")
    key = form_key(support, txn)

    shown = review(support, txn, key, amount="5.00", note="Returned one item")
    assert shown.status_code == 200
    confirmation = text_of(shown.content.decode())
    assert "Refund 5.00 USD to the customer?" in confirmation
    assert "Left to refund after this one 14.99 USD" in confirmation
    assert not Refund.objects.exists(), "the confirmation writes nothing"
    done = confirm(support, txn, key, amount="5.00 USD", note="Returned one item")

    assert messages_of(done) == [
        "Refunded 5.00 USD: the provider refunded the amount. Left to refund: 14.99 USD."
    ]
    first = Refund.objects.get()
    assert (first.amount, first.status, first.reason, first.note, first.requested_by) == (
        500,
        "succeeded",
        "requested_by_customer",
        "Returned one item",
        "support alice",
    )
    assert fake_provider.refund_count(first.provider_idempotency_key) == 1

    rest_key = form_key(support, txn)
    assert rest_key != key, "each form its own key"
    rest = text_of(review(support, txn, rest_key, reason="other").content.decode())
    assert "Refund 14.99 USD to the customer?" in rest and "Left to refund after this one 0.00 USD" in rest
    finished = confirm(support, txn, rest_key, amount="14.99", reason="other")

    assert messages_of(finished) == [
        "Refunded 14.99 USD: the provider refunded the amount. Left to refund: 0.00 USD."
    ]
    body = finished.content.decode()
    assert "Cannot refund: nothing is left to refund" in banner_of(body)
    assert "Refund…" not in body
    history = history_of(body)
    assert "refunded 19.99 USD; left to refund 0.00 USD" in history
    for text in (
        "14.99 USD succeeded Other (say why in the note)",
        "5.00 USD succeeded Requested by the customer Returned one item",
    ):
        assert text in history
    assert history.count("support alice") == 2 and history.count(" refund, ") == 2, "each refund's attempt"
    assert "re_" in history
    assert "1 charge attempt reached the provider; 2 refund attempts" in text_of(body)
    assert body.count("(sends money back)") == 2, "refund attempts are marked in the attempts list"
    logged = LogEntry.objects.filter(object_id=str(txn.pk)).order_by("action_time")
    assert list(logged.values_list("change_message", flat=True)) == [
        "Refund 5.00 USD (requested_by_customer): succeeded.",
        "Refund 14.99 USD (other): succeeded.",
    ]
    again = support.get(f"{CHANGELIST}{txn.pk}/refund/", follow=True)
    assert messages_of(again) == ["Cannot refund: nothing is left to refund."]


def test_a_charge_of_unknown_outcome_cannot_be_refunded_and_the_page_says_why(
    support: Client, fake_provider: FakeProvider
) -> None:
    maybe_charged = unknown()

    body = page(support, maybe_charged)
    refused = support.get(f"{CHANGELIST}{maybe_charged.pk}/refund/", follow=True)

    why = "the charge's outcome is not known yet; it can be refunded once it is known to have succeeded"
    assert f"Cannot refund: {why}." in banner_of(body)
    assert "Refund…" not in body
    assert messages_of(refused) == [f"Cannot refund: {why}."]
    assert not Refund.objects.exists()


def test_the_same_form_sent_twice_refunds_once(support: Client, fake_provider: FakeProvider) -> None:
    txn = charge("tok_visa")
    key = form_key(support, txn)

    first = confirm(support, txn, key, amount="19.99")
    again = confirm(support, txn, key, amount="19.99")

    made = Refund.objects.get()
    assert made.amount == 1999 and made.idempotency_key == key
    assert fake_provider.refund_count(made.provider_idempotency_key) == 1
    assert messages_of(first)[0].startswith("Refunded 19.99 USD: the provider refunded the amount.")
    assert messages_of(again) == [
        "Refunded 19.99 USD once: this form had already been sent, nothing was refunded twice."
    ]
    assert LogEntry.objects.filter(object_id=str(txn.pk)).count() == 1


@pytest.mark.parametrize(
    ("amount", "error"),
    [
        ("abc", "Enter an amount in USD as its format shows it, e.g. 500.00 USD"),
        ("5.001", "USD has 2 decimal places: e.g. 500.00 USD."),
        ("5,00", "Enter an amount in USD as its format shows it"),
        ("5.00 EUR", "Enter an amount in USD as its format shows it"),
        ("0.00", "The amount must be more than zero."),
        ("-5", "The amount must be more than zero."),
        ("20.00", "At most 19.99 USD is left to refund."),
        ("1e3", "Enter an amount in USD as its format shows it"),
    ],
)
def test_bad_amounts_are_refused_and_nothing_is_written(
    support: Client, fake_provider: FakeProvider, amount: str, error: str
) -> None:
    txn = charge("tok_visa")
    key = form_key(support, txn)

    for response in (review(support, txn, key, amount=amount), confirm(support, txn, key, amount=amount)):
        assert response.status_code == 200
        body = text_of(response.content.decode())
        assert error in body and "to the customer?" not in body

    assert not Refund.objects.exists() and fake_provider.total_refunds() == 0
    assert not LogEntry.objects.exists()


def test_reason_and_form_key_are_required(support: Client, fake_provider: FakeProvider) -> None:
    txn = charge("tok_visa")
    key = form_key(support, txn)

    no_reason = text_of(review(support, txn, key, reason="").content.decode())
    forged = text_of(confirm(support, txn, "my-key", amount="1.00").content.decode())

    assert "This field is required." in no_reason
    assert "This form is out of date: open Refund… again." in forged
    assert not Refund.objects.exists() and fake_provider.total_refunds() == 0


def test_amounts_follow_the_currency_minor_unit(support: Client, fake_provider: FakeProvider) -> None:
    yen = charge("tok_visa", amount=1500, currency="JPY")
    key = form_key(support, yen)

    assert "JPY has no decimal places: e.g. 500 JPY." in text_of(
        review(support, yen, key, amount="5.5").content.decode()
    )
    shown = text_of(review(support, yen, key, amount="1,000").content.decode())
    assert "Refund 1,000 JPY to the customer?" in shown and "after this one 500 JPY" in shown
    done = confirm(support, yen, key, amount="1,000 JPY")

    assert (
        messages_of(done)[0]
        == "Refunded 1,000 JPY: the provider refunded the amount. Left to refund: 500 JPY."
    )
    assert Refund.objects.get().amount == 1000


def test_unknown_refund_says_so_and_its_reconcile_finds_it(
    support: Client, fake_provider: FakeProvider, settings: Any
) -> None:
    txn = charge("tok_visa")
    fake_provider.inject_many([{"kind": "drop_after", "on": "refund"}] * 4)  # made, answers lost

    done = confirm(support, txn, form_key(support, txn), amount="3.00")

    made = Refund.objects.get()
    assert made.status == "unknown"
    (said,) = messages_of(done)
    assert said.startswith("Outcome unknown, being verified: 3.00 USD. The payment provider may have made")
    assert "Idempotency-Key" not in said
    body = done.content.decode()
    assert "left to refund 16.99 USD" in history_of(body), "an unknown refund counts against what is left"
    assert "3.00 USD unknown" in history_of(body) and "reconcile_refunds asks the provider" in history_of(
        body
    )
    reconcile_url = f"{CHANGELIST}{txn.pk}/refunds/{made.pk}/reconcile/"
    assert f'action="{reconcile_url}"' in body
    assert viewer().post(reconcile_url).status_code == 403, "Reconcile needs retry_transaction"

    found = support.post(reconcile_url, follow=True)

    assert messages_of(found) == ["Reconcile refund of 3.00 USD: refunded, the provider made the refund."]
    assert Refund.objects.get().status == "succeeded"
    assert fake_provider.refund_count(made.provider_idempotency_key) == 1, "looked up, never sent again"
    assert "refund lookup of 3.00 USD (asks; never refunds)" in found.content.decode()


def test_a_refund_not_sent_is_not_refunded_and_can_be_canceled(
    support: Client, fake_provider: FakeProvider, settings: Any
) -> None:
    txn = charge("tok_visa")
    settings.PAYMENT_SERVICE_URL = f"http://127.0.0.1:{closed_port()}/v1/charges"

    done = confirm(support, txn, form_key(support, txn), amount="2.00")

    made = Refund.objects.get()
    assert (made.status, made.error_type) == ("failed", "provider_error")
    assert messages_of(done) == [
        "Not refunded: the payment provider could not take the refund. "
        "Refund again, or Cancel refund to give up on it."
    ]
    cancel_url = f"{CHANGELIST}{txn.pk}/refunds/{made.pk}/cancel/"
    body = done.content.decode()
    assert f'action="{cancel_url}"' in body and "a person decides" in history_of(body)
    assert member_without_refunds().post(cancel_url).status_code == 403
    assert support.get(cancel_url).status_code == 405, "POST only"

    canceled = support.post(cancel_url, follow=True)

    assert messages_of(canceled) == ["Refund of 2.00 USD canceled: nothing was refunded; never sent again."]
    assert Refund.objects.get().status == "canceled"
    assert "Cancel refund" not in canceled.content.decode()


def test_a_refund_the_provider_holds_is_said_to_be_pending(
    support: Client, fake_provider: FakeProvider
) -> None:
    txn = charge("tok_visa")
    fake_provider.inject({"kind": "refund_pending", "on": "refund", "ms": 60_000})

    done = confirm(support, txn, form_key(support, txn), amount="1.00")

    assert messages_of(done)[0].startswith(
        "Pending with the provider: 1.00 USD. The provider accepted the refund and settles it later"
    )
    assert Refund.objects.get().held_by_provider
    assert "Reconcile" in history_of(done.content.decode())


def test_charged_after_cancel_banner_refunds_all_through_the_confirmation(
    support: Client, fake_provider: FakeProvider
) -> None:
    txn = charge("tok_visa")
    Transaction.objects.filter(pk=txn.pk).update(review_reason="charged after cancel")
    link = f"{CHANGELIST}{txn.pk}/refund/?amount=all&amp;reason=charged_after_cancel"

    body = page(support, txn)
    assert f'href="{link}"' in body and "Refund all 19.99 USD…" in banner_of(body)
    assert "Refund all" not in page(member_without_refunds(), txn)
    shown = support.get(html.unescape(link))
    confirmation = text_of(shown.content.decode())
    assert "Refund 19.99 USD to the customer?" in confirmation and "Charged after cancel" in confirmation
    assert not Refund.objects.exists(), "one click leads to the confirmation, not to a refund"
    key = KEY.search(shown.content.decode())[1]
    done = confirm(support, txn, key, amount="19.99 USD", reason="charged_after_cancel")

    assert messages_of(done)[0].startswith("Refunded 19.99 USD")
    assert Refund.objects.get().reason == "charged_after_cancel"
    assert "Refund all" not in done.content.decode()


def test_no_bulk_refund_from_the_list(support: Client) -> None:
    charge("tok_visa")

    actions = support.get(CHANGELIST, {"status": "all"}).context["action_form"].fields["action"].choices

    assert not [name for name, _ in actions if "refund" in name.lower()]
    assert not [name for name in TransactionAdmin.actions if "refund" in name]


def test_refund_history_dates_are_the_admins_format(support: Client, settings: Any) -> None:
    txn = charge("tok_visa")
    confirm(support, txn, form_key(support, txn), amount="1.00")
    Refund.objects.update(created_at=timezone.now() - timedelta(days=1))

    history = history_of(page(support, txn))

    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC 1\.00 USD succeeded", history)


def test_a_refund_the_provider_refuses_is_not_refunded_and_final(
    support: Client, fake_provider: FakeProvider
) -> None:
    txn = charge("tok_visa")
    fake_provider.inject({"kind": "refund_failed", "on": "refund"})

    done = confirm(support, txn, form_key(support, txn), amount="1.00")

    made = Refund.objects.get()
    assert (made.status, made.error_type) == ("failed", "refund_failed")
    assert messages_of(done)[0].startswith("Not refunded: the payment provider refused this refund.")
    history = history_of(done.content.decode())
    assert "1.00 USD failed" in history and "nothing: final" in history
    assert "Cancel refund" not in history and "left to refund 19.99 USD" in history


def test_a_charge_charged_after_cancel_and_refunded_in_full_leaves_the_attention_list(
    fake_provider: FakeProvider,
) -> None:
    from payments import selectors
    from payments.admin.banners import state_banner

    txn = charge("tok_visa")
    Transaction.objects.filter(pk=txn.pk).update(review_reason="charged after cancel")
    txn.refresh_from_db()
    assert list(selectors.attention_charged_late()) == [txn]
    assert state_banner(txn, now=timezone.now()).level == "error"

    services.refund_create(
        charge_id=txn.pk,
        client=txn.client,
        request=services.RefundRequest(reason="charged_after_cancel"),
        idempotency_key=None,
        by=Actor.SUPPORT,
        requested_by="support",
    )

    assert not selectors.attention_charged_late().exists()
    assert state_banner(txn, now=timezone.now()).level == "info"
