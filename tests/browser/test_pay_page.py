from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from payments.fake_provider import FakeProvider
from payments.models import Transaction
from tests.browser.conftest import fill_payment, save_screenshot
from tests.conftest import TEST_API_KEY

pytestmark = pytest.mark.browser

TIMEOUT_MESSAGE = (
    "The payment provider did not answer in time. You have not been charged twice; "
    "we are checking the payment. Try again is safe."
)
TIMEOUT_WINDOW_S = 1.5

PayPage = Callable[..., Page]


def pay(page: Page) -> None:
    page.get_by_role("button", name="Pay", exact=True).click()


def expect_receipt(page: Page, txn: Transaction) -> None:
    outcome = page.locator("#outcome")
    expect(outcome.get_by_role("heading", name="Payment received")).to_be_visible()
    expect(outcome.locator('[data-field="Transaction ID"]')).to_have_text(str(txn.pk))


def test_successful_payment_shows_receipt_and_lists_it(
    pay_page: PayPage, fake_provider: FakeProvider
) -> None:
    page = pay_page()
    expect(page.get_by_role("button", name="New payment")).to_be_hidden()
    fill_payment(page, amount="19.99", card="Visa — succeeds", description="Order 1001")
    pay(page)

    expect(page.locator("#outcome").get_by_role("heading", name="Payment received")).to_be_visible()
    txn = Transaction.objects.get()
    assert (txn.status, txn.amount, txn.currency) == ("succeeded", 1999, "USD")
    expect_receipt(page, txn)
    expect(page.locator("#outcome")).to_contain_text("19.99 USD was charged to your card")
    listed = page.locator(f'#recent-list li[data-transaction-id="{txn.pk}"]')
    expect(listed).to_contain_text("Succeeded")
    expect(listed).to_contain_text("Order 1001")
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1
    save_screenshot(page, "pay-success.png")


@pytest.mark.parametrize(
    ("card", "reason"),
    [
        ("Declined card", "The card issuer declined the payment."),
        ("Insufficient funds", "The card has insufficient funds."),
    ],
)
def test_declined_card_shows_decline_and_new_payment_uses_a_new_key(
    pay_page: PayPage, fake_provider: FakeProvider, card: str, reason: str
) -> None:
    page = pay_page()
    fill_payment(page, amount="5", card=card)
    pay(page)

    outcome = page.locator("#outcome")
    expect(outcome.get_by_role("heading", name="Card declined")).to_be_visible()
    expect(outcome).to_contain_text(f"Your card was declined. {reason}")
    expect(outcome).to_contain_text("You have not been charged.")
    expect(page.get_by_role("button", name="Try again")).to_be_hidden()
    declined = Transaction.objects.get()
    assert declined.status == "declined"

    page.get_by_role("button", name="New payment").click()
    expect(page.get_by_label("Amount")).to_be_focused()
    page.get_by_label("Test card").select_option(label="Visa — succeeds")
    pay(page)

    expect(outcome.get_by_role("heading", name="Payment received")).to_be_visible()
    succeeded = Transaction.objects.exclude(pk=declined.pk).get()
    expect_receipt(page, succeeded)
    assert succeeded.idempotency_key != declined.idempotency_key
    assert fake_provider.total_charges() == 1


def test_timeout_explains_and_try_again_reuses_the_key_and_charges_once(
    pay_page: PayPage, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    fake_provider.timeout_window_s = TIMEOUT_WINDOW_S
    page = pay_page()
    fill_payment(page, amount="42.50", card="Provider times out", description="Order 1002")
    sent_at = time.monotonic()
    pay(page)

    outcome = page.locator("#outcome")
    expect(outcome).to_contain_text(TIMEOUT_MESSAGE)
    retry = page.get_by_role("button", name="Try again")
    expect(retry).to_be_focused()
    txn = Transaction.objects.get()
    assert (txn.status, txn.error_type) == ("failed", "provider_timeout")
    save_screenshot(page, "pay-timeout.png")

    # The fake provider charged at once but holds every answer for this key
    # until its window ends; after that it answers with the charge it made.
    time.sleep(max(0.0, sent_at + TIMEOUT_WINDOW_S + 0.3 - time.monotonic()))
    retry.click()

    expect_receipt(page, txn)
    txn.refresh_from_db()
    assert txn.status == "succeeded"
    assert Transaction.objects.count() == 1
    assert fake_provider.request_count(txn.provider_idempotency_key) == 2
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1
    assert fake_provider.total_charges() == 1


def test_double_clicking_pay_makes_one_charge(
    pay_page: PayPage, fake_provider: FakeProvider, settings: Any
) -> None:
    # A slow provider keeps the first charge in flight while the second click lands.
    fake_provider.latency_ms = 500
    settings.PAYMENT_TIMEOUT_MS = 3000
    page = pay_page()
    fill_payment(page, amount="12.345", currency="KWD", card="Visa — succeeds")
    page.get_by_role("button", name="Pay", exact=True).dblclick()

    expect(page.locator("#pay-button")).to_have_text("Paying…")
    expect(page.locator("#pay-button")).to_be_disabled()
    expect(page.locator("#outcome").get_by_role("heading", name="Payment received")).to_be_visible()
    # A second request would be in flight by now; let it reach the provider if there were one.
    time.sleep(fake_provider.latency_ms / 1000 + 0.5)
    txn = Transaction.objects.get()
    assert (txn.amount, txn.currency) == (12345, "KWD")
    assert fake_provider.total_charges() == 1
    expect(page.locator("#recent-list li")).to_have_count(1)


def test_amount_with_too_many_decimals_is_refused_before_anything_is_sent(pay_page: PayPage) -> None:
    page = pay_page()
    fill_payment(page, amount="19.999", card="Visa — succeeds")
    pay(page)

    amount = page.get_by_label("Amount")
    expect(page.locator("#amount-error")).to_have_text(
        "USD amounts have at most 2 digits after the decimal point."
    )
    expect(amount).to_have_attribute("aria-invalid", "true")
    expect(amount).to_be_focused()
    expect(page.locator("#outcome")).to_contain_text("Check the payment details")
    assert Transaction.objects.count() == 0


def test_payment_can_be_made_with_the_keyboard_alone(pay_page: PayPage) -> None:
    page = pay_page()
    page.get_by_label("Amount").focus()
    page.keyboard.type("7.5")
    page.keyboard.press("Enter")

    new_payment = page.get_by_role("button", name="New payment")
    expect(new_payment).to_be_focused()
    expect(page.locator("#outcome")).to_contain_text("7.50 USD was charged to your card")
    page.keyboard.press("Enter")
    expect(page.get_by_label("Amount")).to_be_focused()
    expect(page.get_by_label("Amount")).to_be_enabled()


def _health(status: str, *, circuit: str = "closed", response_time: str = "pass") -> str:
    return json.dumps(
        {
            "status": status,
            "checks": {
                "payment-provider:circuit": [{"status": "pass", "observedValue": circuit}],
                "payment-provider:responseTime": [{"status": response_time, "observedValue": 12}],
            },
        }
    )


def test_badge_follows_the_health_contract(page: Page, pay_page: PayPage) -> None:
    answer: dict[str, Any] = {"status": 200, "body": _health("pass")}

    def fulfil(route: Route) -> None:
        if answer["status"] is None:
            route.abort("connectionrefused")
            return
        route.fulfill(status=answer["status"], content_type="application/health+json", body=answer["body"])

    page.route("**/health/", fulfil)
    pay_page()
    badge = page.locator("#health-badge")
    steps = [
        (200, _health("pass"), "All systems normal"),
        (200, _health("warn"), "Payments are slow"),
        (200, _health("warn", circuit="open"), "Payments unavailable"),
        (200, _health("pass"), "All systems normal"),
        (200, _health("warn", response_time="fail"), "Payments unavailable"),
        (200, _health("warn", circuit="half_open"), "Payments are slow"),
        (503, _health("fail"), "Payments unavailable"),
        (200, _health("pass"), "All systems normal"),
        (None, "", "Payments unavailable"),
    ]
    for status, body, text in steps:
        answer.update(status=status, body=body)
        expect(badge).to_have_text(text)


def test_badge_turns_unavailable_when_the_provider_stops(pay_page: PayPage, settings: Any) -> None:
    # A provider of its own: the session's fake_provider is shared and must keep running.
    with FakeProvider(api_key=TEST_API_KEY) as own_provider:
        settings.PAYMENT_SERVICE_URL = own_provider.url
        settings.PAYMENT_HEALTH_URL = own_provider.health_url
        settings.PAYMENT_HEALTH_PROBE_S = 1
        page = pay_page()
        badge = page.locator("#health-badge")
        expect(badge).to_have_text("All systems normal", timeout=20_000)

        own_provider.stop()

        expect(badge).to_have_text("Payments unavailable", timeout=20_000)
