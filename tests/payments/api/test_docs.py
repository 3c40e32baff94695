"""The offline API reference at /api/docs/: Swagger UI from drf-spectacular-sidecar, no CDN."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

DOCS = "/api/docs/"


def assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_the_page_and_every_asset_it_loads_are_served_locally(settings: Any) -> None:
    # WhiteNoise serves the apps' static files straight from their packages, as runserver does.
    settings.WHITENOISE_USE_FINDERS = True
    client = Client()

    page = client.get(DOCS)

    assert page.status_code == 200
    html = page.content.decode()
    urls = assets(html)
    assert any(url.endswith("swagger-ui-bundle.js") for url in urls)
    assert all(url.startswith("/static/drf_spectacular_sidecar/") for url in urls), urls
    assert "//" not in " ".join(urls) and "cdn" not in html.lower()
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert b"".join(response.streaming_content if response.streaming else [response.content])
    assert '"/api/schema/"' in html, "the page loads this server's own schema"
