"""paymentsite/urls.py: the paths outside the apps."""

from __future__ import annotations

import pytest
from django.test import Client


@pytest.mark.django_db
def test_favicon_is_answered_so_no_page_logs_a_404(client: Client) -> None:
    response = client.get("/favicon.ico")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert response.content.decode().startswith("<svg")
    assert "max-age=86400" in response["Cache-Control"]
