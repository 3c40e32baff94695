"""What the browser tests share besides their fixtures (tests/browser/conftest.py): filling in
the payment form, and saving a screenshot."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings as django_settings
from playwright.sync_api import Page

SCREENSHOTS_DIR = Path(django_settings.BASE_DIR) / "docs" / "screenshots"


def fill_payment(page: Page, *, amount: str, card: str, currency: str = "USD", description: str = "") -> None:
    page.get_by_label("Amount").fill(amount)
    page.get_by_label("Currency").select_option(currency)
    page.get_by_label("Description").fill(description)
    page.get_by_label("Test card").select_option(label=card)


def save_screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS_DIR / name
    page.screenshot(path=str(path), full_page=True)
    return path
