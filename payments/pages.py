"""The payment page. It only renders: the page's JavaScript charges through the API."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from payments.currencies import MINOR_UNIT_DIGITS

# The fake provider's tokens (DESIGN.md, "Provider contract"). With a real
# provider the card is tokenized by the provider's own form, never by us.
TEST_CARDS: tuple[tuple[str, str], ...] = (
    ("tok_visa", "Visa — succeeds"),
    ("tok_chargeDeclined", "Declined card"),
    ("tok_insufficientFunds", "Insufficient funds"),
    ("tok_timeout", "Provider times out"),
    ("tok_flaky", "Flaky provider"),
    ("tok_rateLimited", "Rate limited"),
    ("tok_error", "Provider error"),
)
DEFAULT_CURRENCY = "USD"
HEALTH_URL = "/health/"
HEALTH_POLL_DEFAULT_MS = 5000
HEALTH_POLL_MIN_MS = 500
HEALTH_POLL_MAX_MS = 60_000


def _health_poll_ms(raw: str | None) -> int:
    """`?health_poll_ms=` lets tests (and impatient operators) poll faster, within bounds."""
    try:
        wanted_ms = int(raw or "")
    except ValueError:
        return HEALTH_POLL_DEFAULT_MS
    return min(max(wanted_ms, HEALTH_POLL_MIN_MS), HEALTH_POLL_MAX_MS)


@never_cache
@login_required
def pay(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "pay/pay.html",
        {
            "currencies": sorted(MINOR_UNIT_DIGITS.items()),
            "default_currency": DEFAULT_CURRENCY,
            "max_amount": settings.PAYMENT_MAX_AMOUNT,
            "test_cards": TEST_CARDS if settings.PAYMENT_FAKE_PROVIDER else None,
            "health_url": HEALTH_URL,
            "health_poll_ms": _health_poll_ms(request.GET.get("health_poll_ms")),
        },
    )
