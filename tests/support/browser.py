"""What the browser tests share besides their fixtures (tests/browser/conftest.py): filling in
the payment form, the support member's login, and saving a screenshot."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings as django_settings
from playwright.sync_api import Page

# README's screenshots live in docs/screenshots; `make screenshots` writes them there by setting
# SCREENSHOT_DIR. Without it they go to a temporary directory, so `make test` leaves the tree as it was.
README_SCREENSHOTS_DIR = Path(django_settings.BASE_DIR) / "docs" / "screenshots"
SCREENSHOT_DIR_VARIABLE = "SCREENSHOT_DIR"
_screenshots_dir: list[Path] = []  # this session's directory, chosen by tests/browser/conftest.py

# The "Payment support" member the admin pages' tests sign in as (tests/browser/conftest.py admin_page).
SUPPORT_USER, SUPPORT_PASSWORD = "alice", "pw-alice-support"


def fill_payment(page: Page, *, amount: str, card: str, currency: str = "USD", description: str = "") -> None:
    page.get_by_label("Amount").fill(amount)
    page.get_by_label("Currency").select_option(currency)
    page.get_by_label("Description").fill(description)
    page.get_by_label("Test card").select_option(label=card)


def save_screenshot(page: Page, name: str) -> Path:
    """`name` in $SCREENSHOT_DIR (`make screenshots`: docs/screenshots), else in a temporary directory."""
    directory = _screenshots_dir[0]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    page.screenshot(path=str(path), full_page=True)
    return path
