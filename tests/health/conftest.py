from __future__ import annotations

from typing import Any

import pytest
from django.test import Client


@pytest.fixture
def health_client(transactional_db: None, settings: Any) -> Client:
    """An anonymous client, with the provider probed every second."""
    settings.PAYMENT_HEALTH_PROBE_S = 1
    return Client()
