"""Headless Chromium (Debian's, not Playwright's download) against pytest-django's live server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from payments import services
from tests.support.browser import SCREENSHOT_DIR_VARIABLE, SUPPORT_PASSWORD, SUPPORT_USER, _screenshots_dir

# Playwright's sync API runs an event loop in the test thread; without this
# Django refuses the ORM calls the tests make to check outcomes.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DESKTOP_VIEWPORT = {"width": 1280, "height": 900}
USERNAME = "demo"
PASSWORD = "demo-password"
HEALTH_POLL_MS = 500
# The narrowest desktop screen the admin's list must fit without scrolling sideways.
LAPTOP_VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture(scope="session", autouse=True)
def screenshots_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    chosen = os.environ.get(SCREENSHOT_DIR_VARIABLE, "").strip()
    directory = Path(chosen).resolve() if chosen else tmp_path_factory.mktemp("screenshots")
    _screenshots_dir[:] = [directory]
    yield directory
    _screenshots_dir.clear()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture(autouse=True)
def payment_page_settings(provider_settings: Any) -> Any:
    provider_settings.PAYMENT_FAKE_PROVIDER = True
    # The page does not read a payment being verified again unless a test asks it to (then a
    # test that waits on "being verified" would see it settle under it).
    provider_settings.PAYMENT_LOOKUP_ON_READ_S = 0
    return provider_settings


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP_VIEWPORT, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(15_000)
    opened = context.new_page()
    yield opened
    context.close()


@pytest.fixture
def demo_user(transactional_db: None) -> Any:
    return get_user_model().objects.create_user(username=USERNAME, password=PASSWORD)


@pytest.fixture
def pay_page(page: Page, live_server: Any, demo_user: Any) -> Callable[..., Page]:
    """Open /pay/ as the demo user, logging in through the real login page."""

    def open_page(query: str = f"health_poll_ms={HEALTH_POLL_MS}") -> Page:
        page.goto(f"{live_server.url}/pay/?{query}")
        page.get_by_label("Username").fill(USERNAME)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/pay/**")
        page.get_by_role("heading", name="Make a payment").wait_for()
        return page

    return open_page


@pytest.fixture
def admin_page(page: Page, live_server: Any, transactional_db: None) -> Page:
    """Signed in to /admin/ as a member of "Payment support", through the real login page."""
    services.support_user_create(username=SUPPORT_USER, password=SUPPORT_PASSWORD)
    page.set_viewport_size(LAPTOP_VIEWPORT)
    page.goto(f"{live_server.url}/admin/")
    page.get_by_label("Username").fill(SUPPORT_USER)
    page.get_by_label("Password").fill(SUPPORT_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Waiting for support").wait_for()
    return page
