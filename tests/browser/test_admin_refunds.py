"""Refunds in the admin as a member of "Payment support", in headless Chromium: part of a
charge, then the rest; a charge of unknown outcome refused with the banner's explanation; the
charged-after-cancel banner's one-click refund through the confirmation."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from playwright.sync_api import Page, expect

from fakeprovider import FakeProvider
from payments.models import Refund, Transaction
from tests.support.browser import SUPPORT_USER, save_screenshot
from tests.support.factories import charge, unknown

pytestmark = pytest.mark.browser


def open_payment(page: Page, live_server: Any, txn: Transaction) -> None:
    page.goto(f"{live_server.url}/admin/payments/transaction/{txn.pk}/change/")


def state(page: Page) -> Any:
    return page.locator("#payment-state")


def expect_message(page: Page, text: str) -> None:
    expect(page.locator("ul.messagelist li")).to_have_text(text)


def review(page: Page, *, amount: str, reason: str, note: str = "") -> None:
    state(page).get_by_role("link", name="Refund…").click()
    page.get_by_label("Amount (USD)").fill(amount)
    page.get_by_label("Reason").select_option(label=reason)
    page.get_by_label("Note").fill(note)
    page.get_by_role("button", name="Review refund").click()


def test_refund_part_of_a_charge_then_the_rest(
    admin_page: Page, live_server: Any, fake_provider: FakeProvider
) -> None:
    page = admin_page
    txn = charge("tok_visa")
    open_payment(page, live_server, txn)
    history = page.locator("#refunds")
    expect(history).to_contain_text("Charged 19.99 USD; refunded 0.00 USD; left to refund 19.99 USD")

    review(page, amount="5.00", reason="Requested by the customer", note="Returned one item")
    expect(page.get_by_role("heading", name="Refund 5.00 USD to the customer?")).to_be_visible()
    expect(page.locator("#refund-left-after")).to_have_text("14.99 USD")
    assert not Refund.objects.exists(), "the confirmation writes nothing"
    save_screenshot(page, "admin-refund-confirm.png")
    page.get_by_role("button", name="Refund 5.00 USD").click()

    expect_message(page, "Refunded 5.00 USD: the provider refunded the amount. Left to refund: 14.99 USD.")
    expect(history.locator("tbody tr")).to_have_count(1)
    expect(history.locator("tbody tr").first).to_contain_text("support alice")

    review(page, amount="", reason="Duplicate payment")  # blank: all that is left
    expect(page.get_by_role("heading", name="Refund 14.99 USD to the customer?")).to_be_visible()
    expect(page.locator("#refund-left-after")).to_have_text("0.00 USD")
    page.get_by_role("button", name="Refund 14.99 USD").click()

    expect_message(page, "Refunded 14.99 USD: the provider refunded the amount. Left to refund: 0.00 USD.")
    expect(state(page)).to_contain_text("Cannot refund: nothing is left to refund")
    expect(state(page).get_by_role("link", name="Refund…")).to_have_count(0)
    expect(history.locator("tbody tr")).to_have_count(2)
    expect(history).to_contain_text("refunded 19.99 USD; left to refund 0.00 USD")
    expect(page.locator("tr.ps-refund-attempt")).to_have_count(2)
    save_screenshot(page, "admin-refunds.png")
    refunds = list(Refund.objects.order_by("created_at"))
    assert [(r.amount, r.status, r.reason) for r in refunds] == [
        (500, "succeeded", "requested_by_customer"),
        (1499, "succeeded", "duplicate"),
    ]
    assert [fake_provider.refund_count(r.provider_idempotency_key) for r in refunds] == [1, 1]
    logged = LogEntry.objects.filter(object_id=str(txn.pk), user__username=SUPPORT_USER)
    assert list(logged.order_by("action_time").values_list("change_message", flat=True)) == [
        "Refund 5.00 USD (requested_by_customer): succeeded.",
        "Refund 14.99 USD (duplicate): succeeded.",
    ]


def test_a_charge_of_unknown_outcome_is_not_refunded_and_the_banner_says_why(
    admin_page: Page, live_server: Any, fake_provider: FakeProvider
) -> None:
    page = admin_page
    maybe_charged = unknown()
    why = (
        "Cannot refund: the charge's outcome is not known yet; "
        "it can be refunded once it is known to have succeeded."
    )

    open_payment(page, live_server, maybe_charged)
    expect(state(page).locator(".ps-refund-note")).to_have_text(why)
    expect(page.get_by_role("link", name="Refund…")).to_have_count(0)
    page.goto(f"{page.url.removesuffix('change/')}refund/")  # the form's address, typed in

    expect_message(page, why)
    expect(state(page).get_by_role("heading")).to_have_text(
        "Outcome unknown: the provider may have charged; Reconcile asks it."
    )
    assert not Refund.objects.exists() and fake_provider.total_refunds() == 0


def test_charged_after_cancel_refunds_all_from_the_banner_through_the_confirmation(
    admin_page: Page, live_server: Any, fake_provider: FakeProvider
) -> None:
    page = admin_page
    txn = charge("tok_visa")
    Transaction.objects.filter(pk=txn.pk).update(review_reason="charged after cancel")

    open_payment(page, live_server, txn)
    state(page).get_by_role("link", name="Refund all 19.99 USD…").click()
    expect(page.get_by_role("heading", name="Refund 19.99 USD to the customer?")).to_be_visible()
    expect(page.locator("#refund-confirm")).to_contain_text("Charged after cancel")
    page.get_by_role("button", name="Refund 19.99 USD").click()

    expect_message(page, "Refunded 19.99 USD: the provider refunded the amount. Left to refund: 0.00 USD.")
    made = Refund.objects.get()
    assert (made.amount, made.reason, made.status) == (1999, "charged_after_cancel", "succeeded")
    assert fake_provider.refund_count(made.provider_idempotency_key) == 1
