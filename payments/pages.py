"""The payment page. It only renders: the page's JavaScript charges through the API.

Payments are taken by client accounts. Staff accounts, and those in the "Payment
support" group, work in the admin: the page refuses them (403, with a page that says
so) unless they were also made an API client (`manage.py create_api_client`, which
gives them an API key; a revoked or expired key does not count).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from payments import outcomes
from payments.currencies import MINOR_UNIT_DIGITS
from payments.roles import can_take_payments

# The fake provider's test cards (README, "The fake provider"). With a real
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
    if not can_take_payments(request.user):
        return render(request, "pay/refused.html", status=403)
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
            # While a payment is being verified, the page reads it again this often (each read may
            # ask the provider: payments.services.lookup); 0: it does not.
            "verify_poll_ms": settings.PAYMENT_LOOKUP_ON_READ_S * 1000,
            # pay.js picks the payer's message from the one outcome table (payments.outcomes).
            "outcome_pages": [
                {"name": a.name, "type": a.error_type, "code": a.code, "page": a.page}
                for a in outcomes.ANSWERS
            ],
        },
    )
