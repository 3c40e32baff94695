"""The admin as a member of "Payment support" uses it: from the index's counts to a payment,
its state, and the next step (Retry now, Reconcile, Cancel…), in headless Chromium."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.utils import timezone
from playwright.sync_api import Page, expect

from fakeprovider import FakeProvider
from payments.models import Transaction
from tests.support.browser import SUPPORT_USER, save_screenshot
from tests.support.factories import charge, unknown
from tests.support.network import closed_port

pytestmark = pytest.mark.browser

Status = Transaction.Status


def state(page: Page) -> Any:
    return page.locator("#payment-state")


def expect_message(page: Page, text: str) -> None:
    expect(page.locator("ul.messagelist li")).to_have_text(text)


def logged(txn: Transaction) -> list[str]:
    entries = LogEntry.objects.filter(object_id=str(txn.pk), user__username=SUPPORT_USER)
    return list(entries.order_by("action_time").values_list("change_message", flat=True))


def fits_the_width(page: Page) -> bool:
    """Neither the page nor the list's own scrolling box (#changelist .results) scrolls sideways."""
    return page.evaluate(
        """() => [document.documentElement, ...document.querySelectorAll("#changelist .results")]
            .every((box) => box.scrollWidth <= box.clientWidth)"""
    )


def test_find_an_overdue_failed_payment_from_the_index_read_its_state_and_retry_it(
    admin_page: Page, fake_provider: FakeProvider, settings: Any
) -> None:
    page = admin_page
    provider_url = settings.PAYMENT_SERVICE_URL
    settings.PAYMENT_SERVICE_URL = f"http://127.0.0.1:{closed_port()}/v1/charges"
    overdue = charge("tok_visa")  # every connection refused: nothing sent
    assert (overdue.status, overdue.error_code) == (Status.FAILED, "connection_error")
    refused = overdue.attempt_log.count()
    settings.PAYMENT_SERVICE_URL = provider_url
    Transaction.objects.filter(pk=overdue.pk).update(next_retry_at=timezone.now() - timedelta(minutes=25))
    charge("tok_visa")  # succeeded: nothing waits
    charge("tok_visa", currency="EUR")
    page.reload()

    counts = page.locator("#needs-attention")
    expect(counts.locator('[data-attention="overdue"]')).to_have_text("1 Retry overdue by over 10 min")
    expect(counts.locator('[data-attention="review"]')).to_have_text("0 Needs review")
    save_screenshot(page, "admin-index.png")
    counts.locator('[data-attention="overdue"]').click()

    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("provider_error (connection_error)")
    expect(rows.first.locator("td.field-next_retry .ps-overdue")).to_be_visible()
    assert fits_the_width(page), "the list fits 1366 px without a horizontal scrollbar"
    currencies = page.locator("#changelist-filter").get_by_role("link", name="USD")
    expect(currencies).to_have_count(1)
    save_screenshot(page, "admin-failed-payments.png")

    rows.first.locator("th a").click()
    expect(state(page).get_by_role("heading")).to_have_text("Not charged: retry is safe.")
    expect(state(page)).to_contain_text("Overdue by 25 min. Is retry_failed_payments running?")
    expect(page.locator(".ps-attempt-summary")).to_have_text(
        f"0 charge attempts reached the provider; {refused} refused connections, nothing sent"
    )
    expect(page.locator("tr.ps-refused")).to_have_count(refused)
    assert fits_the_width(page)
    save_screenshot(page, "admin-retry-overdue.png")
    state(page).get_by_role("button", name="Retry now").click()

    expect_message(page, "Retry: succeeded, the provider charged the card.")
    expect(state(page).get_by_role("heading")).to_have_text("Succeeded: the provider charged the card.")
    expect(state(page).get_by_role("button")).to_have_count(0)
    overdue.refresh_from_db()
    assert overdue.status == Status.SUCCEEDED
    assert fake_provider.charge_count(overdue.provider_idempotency_key) == 1
    assert logged(overdue) == ["Retry: succeeded."]


def test_reconcile_unknown_outcomes_then_cancel_the_uncharged_one_with_a_reason(
    admin_page: Page, fake_provider: FakeProvider, settings: Any
) -> None:
    page = admin_page
    settings.PAYMENT_MAX_RETRIES = 0
    fake_provider.inject({"kind": "drop_after"})  # the provider charges; the answer is lost
    charged = charge("tok_visa")
    assert charged.status == Status.UNKNOWN
    past_window = timezone.now() - timedelta(seconds=settings.PAYMENT_RECONCILE_AFTER_S + 1)
    Transaction.objects.filter(pk=charged.pk).update(charge_started_at=past_window, updated_at=past_window)
    never_arrived = unknown(age=timedelta(seconds=settings.PAYMENT_RECONCILE_AFTER_S + 1))
    assert fake_provider.charge_count(charged.provider_idempotency_key) == 1
    assert fake_provider.charge_count(never_arrived.provider_idempotency_key) == 0
    page.reload()

    link = page.locator('#needs-attention [data-attention="reconcile"]')
    expect(link).to_have_text("2 Outcome unknown, past the reconcile window")
    link.click()
    expect(page.locator("#result_list tbody tr")).to_have_count(2)

    page.locator(f'#result_list a[href*="{charged.pk}"]').click()
    expect(state(page).get_by_role("heading")).to_have_text(
        "Outcome unknown: the provider may have charged; Reconcile asks it."
    )
    expect(state(page)).to_contain_text("No attempt can be in flight since")
    expect(state(page).get_by_role("button", name="Cancel…")).to_have_count(0)
    expect(state(page).get_by_role("link", name="Cancel…")).to_have_count(0)
    save_screenshot(page, "admin-outcome-unknown.png")
    state(page).get_by_role("button", name="Reconcile").click()

    expect_message(page, "Reconcile: succeeded, the provider charged the card.")
    expect(state(page).get_by_role("heading")).to_have_text("Succeeded: the provider charged the card.")
    charged.refresh_from_db()
    assert (charged.status, charged.provider_charge_id[:3]) == (Status.SUCCEEDED, "ch_")
    assert fake_provider.charge_count(charged.provider_idempotency_key) == 1, "found, not charged again"
    assert logged(charged) == ["Reconcile: succeeded."]

    page.goto(page.url.replace(str(charged.pk), str(never_arrived.pk)))
    state(page).get_by_role("button", name="Reconcile").click()
    expect_message(page, "Reconcile: the provider made no charge, retry is safe.")
    expect(state(page).get_by_role("heading")).to_have_text("Not charged: retry is safe.")
    expect(state(page)).to_contain_text("A lookup proved the provider made no charge.")
    expect(page.locator("tr.ps-lookup")).to_have_count(1)
    save_screenshot(page, "admin-not-charged.png")

    state(page).get_by_role("link", name="Cancel…").click()
    page.get_by_label("Reason").fill("Customer paid by bank transfer")
    page.get_by_role("button", name="Cancel payment").click()

    expect_message(page, "Canceled: Customer paid by bank transfer. It will never be sent again.")
    expect(state(page).get_by_role("heading")).to_have_text(
        "Canceled: this payment was canceled and will not be charged."
    )
    expect(state(page)).to_contain_text("Reason: Customer paid by bank transfer.")
    never_arrived.refresh_from_db()
    assert (never_arrived.status, never_arrived.status_note) == (
        Status.CANCELED,
        "Customer paid by bank transfer",
    )
    assert fake_provider.charge_count(never_arrived.provider_idempotency_key) == 0
    assert logged(never_arrived)[0].startswith("Reconcile: not_charged.")
    assert logged(never_arrived)[1] == "Canceled: Customer paid by bank transfer"
    save_screenshot(page, "admin-canceled.png")
