from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from playwright.sync_api import Locator, Page, Route, expect

from fakeprovider import FakeProvider
from payments import outcomes, provider
from payments.models import Transaction
from tests.support.browser import fill_payment, save_screenshot
from tests.support.factories import make_due
from tests.support.service import TEST_API_KEY

pytestmark = pytest.mark.browser

TIMEOUT_WINDOW_S = 1.5
ACTIONS = ("Try again", "Cancel payment", "New payment")
PHONE_VIEWPORT = {"width": 375, "height": 812}
HOLD_MS = 1500

PayPage = Callable[..., Page]


def pay(page: Page) -> None:
    page.get_by_role("button", name="Pay", exact=True).click()


def page_text(name: str) -> str:
    """The payer's message for an answer, from the one outcome table the page reads."""
    return outcomes.answer(name).page


def expect_actions(page: Page, *names: str) -> None:
    """Exactly these outcome buttons are offered."""
    for name in ACTIONS:
        button = page.get_by_role("button", name=name, exact=True)
        if name in names:
            expect(button).to_be_visible()
        else:
            expect(button).to_be_hidden()


def expect_being_verified(page: Page, heading: str) -> Locator:
    """The outcome may be a charge: never "not charged", and no New payment that could charge twice."""
    outcome = page.locator("#outcome")
    expect(outcome.get_by_role("heading", name=heading)).to_be_visible()
    expect(outcome).to_contain_text(page_text("outcome_unknown"))
    expect(outcome).not_to_contain_text("not been charged")
    expect_actions(page, "Try again")
    expect(page.get_by_role("button", name="Try again")).to_be_focused()
    return outcome


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
    expect(outcome).to_contain_text(page_text("declined"))
    expect(outcome).to_contain_text(reason)
    expect_actions(page, "New payment")
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


def test_timeout_says_being_verified_offers_no_new_payment_and_try_again_charges_once(
    pay_page: PayPage, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    fake_provider.timeout_window_s = TIMEOUT_WINDOW_S
    page = pay_page()
    fill_payment(page, amount="42.50", card="Provider times out", description="Order 1002")
    sent_at = time.monotonic()
    pay(page)

    outcome = expect_being_verified(page, "We are checking this payment")
    retry = page.get_by_role("button", name="Try again")
    txn = Transaction.objects.get()
    assert (txn.status, txn.error_type, txn.error_code) == ("unknown", "outcome_unknown", "provider_timeout")
    expect(outcome).to_contain_text(f"Payment reference: {txn.pk}")
    expect(page.locator(f'#recent-list li[data-transaction-id="{txn.pk}"]')).to_contain_text("Being verified")
    save_screenshot(page, "pay-verifying.png")

    # The fake provider charged at once but holds every answer for this key
    # until its window ends; after that it answers with the charge it made.
    time.sleep(max(0.0, sent_at + TIMEOUT_WINDOW_S + 0.3 - time.monotonic()))
    retry.click()

    expect_receipt(page, txn)
    expect_actions(page, "New payment")
    txn.refresh_from_db()
    assert txn.status == "succeeded"
    assert Transaction.objects.count() == 1
    assert fake_provider.request_count(txn.provider_idempotency_key) == 2
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1
    assert fake_provider.total_charges() == 1


def test_a_payment_being_verified_shows_its_receipt_once_the_service_learns_it_was_charged(
    pay_page: PayPage, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    settings.PAYMENT_LOOKUP_ON_READ_S = 1  # the page reads it every second; each read may look it up
    fake_provider.inject({"kind": "drop_after"})  # charged, but the answer is lost
    page = pay_page()
    fill_payment(page, amount="12.00", card="Visa — succeeds", description="Order 1003")
    pay(page)

    expect_being_verified(page, "We are checking this payment")
    txn = Transaction.objects.get()
    assert txn.status == "unknown"

    expect_receipt(page, txn)  # nobody clicked: the page read it again and the service looked it up
    expect_actions(page, "New payment")
    txn.refresh_from_db()
    assert txn.status == "succeeded"
    assert fake_provider.request_count(txn.provider_idempotency_key) == 1, "looked up, never sent again"
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1


def test_no_answer_from_paymentsite_says_being_verified_without_new_payment(pay_page: PayPage) -> None:
    page = pay_page()
    page.route("**/api/v1/charges", lambda route: route.abort("connectionreset"))
    fill_payment(page, amount="3", card="Visa — succeeds")
    pay(page)

    expect_being_verified(page, "No answer from Paymentsite")


def run_retry_command() -> None:
    """retry_failed_payments in-process; exit 1 (a row not charged) is an answer, not a crash."""
    try:
        call_command("retry_failed_payments", stdout=io.StringIO(), stderr=io.StringIO())
    except CommandError as exc:
        assert exc.returncode == 1, exc


def pay_and_fail(pay_page: PayPage, fake_provider: FakeProvider, settings: Any, *, amount: str) -> Page:
    """Pay with a good card while the provider answers 503 to every try: known not charged."""
    fake_provider.inject_many([{"kind": "status", "status": 503}] * (settings.PAYMENT_MAX_RETRIES + 1))
    page = pay_page()
    fill_payment(page, amount=amount, card="Visa — succeeds", description=f"Order for {amount}")
    pay(page)
    return page


def cancel_and_check_it_is_never_sent(page: Page, fake_provider: FakeProvider, txn: Transaction) -> None:
    outcome = page.locator("#outcome")
    page.get_by_role("button", name="Cancel payment").click()

    expect(outcome.get_by_role("heading", name="Payment canceled")).to_be_visible()
    expect(outcome).to_contain_text(page_text("canceled"))
    expect(outcome).to_contain_text("nothing will be charged")
    expect_actions(page, "New payment")
    expect(page.get_by_role("button", name="New payment")).to_be_focused()
    txn.refresh_from_db()
    assert (txn.status, txn.next_retry_at) == ("canceled", None)
    expect(page.locator(f'#recent-list li[data-transaction-id="{txn.pk}"]')).to_contain_text("Canceled")

    # Were it still failed, this would send it (the provider answers normally again).
    assert fake_provider.pending_faults() == []
    requests_before = fake_provider.request_count(txn.provider_idempotency_key)
    make_due(txn)
    run_retry_command()
    txn.refresh_from_db()
    assert txn.status == "canceled"
    assert fake_provider.request_count(txn.provider_idempotency_key) == requests_before
    assert fake_provider.ledger() == {}


def test_retry_scheduled_says_when_and_cancel_stops_it_for_good(
    pay_page: PayPage, fake_provider: FakeProvider, settings: Any
) -> None:
    page = pay_and_fail(pay_page, fake_provider, settings, amount="8.25")

    outcome = page.locator("#outcome")
    expect(outcome.get_by_role("heading", name="The payment will be tried again")).to_be_visible()
    expect(outcome).to_contain_text(page_text("retry_scheduled"))
    expect_actions(page, "Try again", "Cancel payment")
    expect(page.get_by_role("button", name="Try again")).to_be_focused()
    txn = Transaction.objects.get()
    assert (txn.status, txn.error_type) == ("failed", "provider_error")
    assert txn.next_retry_at is not None
    shown_at = outcome.locator("time").get_attribute("datetime")
    assert shown_at is not None
    assert datetime.fromisoformat(shown_at) == txn.next_retry_at
    expect(outcome.locator("time")).to_have_text(txn.next_retry_at.strftime("%b %-d, %Y, %-I:%M %p"))
    save_screenshot(page, "pay-retry-scheduled.png")

    cancel_and_check_it_is_never_sent(page, fake_provider, txn)
    save_screenshot(page, "pay-canceled.png")


def test_cancel_refused_once_a_retry_may_have_charged_shows_why_and_try_again_gets_the_charge(
    pay_page: PayPage, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    page = pay_and_fail(pay_page, fake_provider, settings, amount="6")
    outcome = page.locator("#outcome")
    expect_actions(page, "Try again", "Cancel payment")
    txn = Transaction.objects.get()

    # While the page shows "will be tried again", the retry command sends it: the provider
    # charges but answers after our read timeout, so the outcome is unknown.
    fake_provider.inject({"kind": "hold", "ms": HOLD_MS})
    make_due(txn)
    sent_at = time.monotonic()
    run_retry_command()
    txn.refresh_from_db()
    assert (txn.status, fake_provider.charge_count(txn.provider_idempotency_key)) == ("unknown", 1)

    page.get_by_role("button", name="Cancel payment").click()

    expect(outcome.get_by_role("heading", name="The payment was not canceled")).to_be_visible()
    expect(outcome).to_contain_text(page_text("not_cancelable"))
    expect(outcome).to_contain_text("the provider may have charged it")
    expect_actions(page, "Try again")
    txn.refresh_from_db()
    assert txn.status == "unknown"

    time.sleep(max(0.0, sent_at + HOLD_MS / 1000 + 0.3 - time.monotonic()))
    page.get_by_role("button", name="Try again").click()
    expect(outcome.get_by_role("heading", name="Payment received")).to_be_visible()
    expect_receipt(page, txn)
    assert fake_provider.charge_count(txn.provider_idempotency_key) == 1
    assert fake_provider.total_charges() == 1


def test_retry_scheduled_fits_a_375_px_phone_screen(
    pay_page: PayPage, fake_provider: FakeProvider, settings: Any
) -> None:
    page = pay_and_fail(pay_page, fake_provider, settings, amount="1")
    page.set_viewport_size(PHONE_VIEWPORT)

    expect_actions(page, "Try again", "Cancel payment")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]
    for name in ("Try again", "Cancel payment"):
        box = page.get_by_role("button", name=name).bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE_VIEWPORT["width"]
        assert box["height"] >= 44, "a touch target at least 44 px high"


def test_needs_review_offers_only_cancel_then_new_payment(
    pay_page: PayPage, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_ATTEMPTS = 1
    page = pay_and_fail(pay_page, fake_provider, settings, amount="9")

    outcome = page.locator("#outcome")
    expect(outcome.get_by_role("heading", name="The payment could not be completed")).to_be_visible()
    expect(outcome).to_contain_text(page_text("needs_review"))
    expect_actions(page, "Cancel payment")
    expect(page.get_by_role("button", name="Cancel payment")).to_be_focused()
    txn = Transaction.objects.get()
    assert (txn.status, txn.next_retry_at) == ("failed", None)

    cancel_and_check_it_is_never_sent(page, fake_provider, txn)


def test_provider_unavailable_keeps_nothing_and_try_again_charges_once(
    pay_page: PayPage, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_BREAKER_FAILURES = 1
    settings.PAYMENT_BREAKER_RESET_S = 60
    page = pay_page()
    provider.get_client().breaker.record_failure()
    fill_payment(page, amount="4", card="Visa — succeeds")
    pay(page)

    outcome = page.locator("#outcome")
    expect(outcome.get_by_role("heading", name="Payments are unavailable right now")).to_be_visible()
    expect(outcome).to_contain_text(page_text("provider_unavailable"))
    expect_actions(page, "Try again", "New payment")
    assert Transaction.objects.count() == 0

    provider.get_client().breaker.reset()
    page.get_by_role("button", name="Try again").click()
    expect(outcome.get_by_role("heading", name="Payment received")).to_be_visible()
    expect_receipt(page, Transaction.objects.get())
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
