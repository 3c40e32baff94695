from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import Client


@pytest.fixture
def support(transactional_db: None) -> Client:
    """Signed in as alice, a member of "Payment support" made by create_support_user."""
    call_command("create_support_user", "alice", "--password", "pw-alice", stdout=io.StringIO())
    client = Client()
    assert client.login(username="alice", password="pw-alice")
    return client
