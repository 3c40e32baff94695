"""Where the browser tests' screenshots go: a temporary directory unless SCREENSHOT_DIR says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import Page

from tests.support.browser import SCREENSHOT_DIR_VARIABLE, save_screenshot

pytestmark = pytest.mark.browser


def test_screenshots_stay_out_of_the_repository_unless_asked_for(page: Page, screenshots_dir: Path) -> None:
    if os.environ.get(SCREENSHOT_DIR_VARIABLE):
        pytest.skip("SCREENSHOT_DIR is set: this run writes where it says")
    page.set_content("<h1>Screenshot</h1>")

    path = save_screenshot(page, "where-it-goes.png")

    assert path.is_file()
    assert path.parent == screenshots_dir
    assert not path.resolve().is_relative_to(Path(settings.BASE_DIR).resolve())
