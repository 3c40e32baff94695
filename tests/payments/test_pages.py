"""What a newcomer meets first: the index page, who may use /pay/, creating a support login."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from apikeys.models import APIKey
from payments import services
from tests.support.service import TEST_API_KEY

INDEX_LINKS = {"/pay/", "/admin/", "/api/docs/", "/api/schema/", "/health/"}


@pytest.mark.django_db
def test_index_page_leads_to_the_payment_page_admin_api_reference_and_health(client: Client) -> None:
    response = client.get("/")

    assert response.status_code == 200
    links = set(re.findall(r'href="([^"]+)"', response.content.decode()))
    assert links >= INDEX_LINKS
    for link in sorted(INDEX_LINKS):
        assert client.get(link).status_code != 404, link


@pytest.fixture
def support_user(db: None) -> Any:
    user, _ = services.support_user_create(username="alice", password="alice-password")
    return user


@pytest.mark.django_db
def test_pay_page_refuses_support_staff_with_a_page_that_says_why(client: Client, support_user: Any) -> None:
    client.force_login(support_user)

    response = client.get("/pay/")

    assert response.status_code == 403
    assert "cannot take payments" in response.content.decode()
    assert 'id="pay-form"' not in response.content.decode()


@pytest.mark.django_db
def test_pay_page_refuses_a_staff_user_outside_the_support_group(client: Client) -> None:
    client.force_login(get_user_model().objects.create_user("admin", password="pw", is_staff=True))

    assert client.get("/pay/").status_code == 403


@pytest.mark.django_db
def test_pay_page_serves_client_accounts_and_staff_made_api_clients(
    client: Client, support_user: Any
) -> None:
    client.force_login(get_user_model().objects.create_user("demo", password="demo-password"))
    assert client.get("/pay/").status_code == 200

    key, _ = APIKey.objects.issue(support_user, "till")  # what `manage.py create_api_client alice` does
    client.force_login(support_user)
    assert client.get("/pay/").status_code == 200

    key.revoke()
    assert client.get("/pay/").status_code == 403


@pytest.mark.django_db
def test_create_support_user_reads_the_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORT_USER_PASSWORD", "from-the-environment")

    call_command("create_support_user", "carol", stdout=io.StringIO())

    user = get_user_model().objects.get(username="carol")
    assert user.is_staff
    assert user.check_password("from-the-environment")
    assert user.groups.filter(name=services.SUPPORT_GROUP_NAME).exists()


def test_create_support_user_without_a_terminal_or_password_fails_with_one_line() -> None:
    env = {key: value for key, value in os.environ.items() if key != "SUPPORT_USER_PASSWORD"}
    env.update(PAYMENT_SERVICE_URL="http://127.0.0.1:8099/v1/charges", PAYMENT_API_KEY=TEST_API_KEY)

    result = subprocess.run(
        [sys.executable, "manage.py", "create_support_user", "dave"],
        cwd=settings.BASE_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "CommandError: No password: set SUPPORT_USER_PASSWORD, or run this in a terminal to be asked."
    ]


@pytest.mark.django_db(transaction=True)
def test_a_support_session_cannot_take_payments_through_the_api_either(
    client: Client, support_user: Any, fake_provider: Any
) -> None:
    charge = {"amount": 1999, "currency": "USD", "source": "tok_visa"}
    client.force_login(support_user)

    refused = client.post("/api/v1/charges", charge, content_type="application/json")

    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"
    assert fake_provider.total_charges() == 0
    client.force_login(get_user_model().objects.create_user("payer", password="pw"))
    assert client.post("/api/v1/charges", charge, content_type="application/json").status_code == 201
