"""The API reference renders the API's operations in a real browser, offline."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, Request

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_reference_lists_the_charge_operations_without_leaving_the_server(
    page: Page, live_server: Any
) -> None:
    outside: list[str] = []

    def note(request: Request) -> None:
        if not request.url.startswith(live_server.url):
            outside.append(request.url)

    page.on("request", note)
    page.goto(f"{live_server.url}/api/docs/")

    operations = page.locator(".opblock-summary")
    operations.first.wait_for()
    rendered = {" ".join(text.split()[:2]) for text in operations.all_inner_texts()}
    schema = page.request.get(f"{live_server.url}/api/schema/?format=json").json()
    expected = {f"{method.upper()} {path}" for path, item in schema["paths"].items() for method in item}
    assert "POST /api/v1/charges" in expected and rendered == expected
    assert page.get_by_role("button", name="Authorize").is_visible()
    assert outside == [], "nothing is fetched from outside the server"
