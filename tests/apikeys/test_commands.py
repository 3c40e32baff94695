"""create_api_client and api_keys: keys printed once, passwords never taken from argv."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from apikeys.management.commands.create_api_client import PASSWORD_ENV
from apikeys.management.commands.create_api_client import Command as CreateApiClient
from apikeys.models import APIKey
from tests.support.service import TEST_API_KEY, database_url_for_subprocess

pytestmark = pytest.mark.django_db(transaction=True)

KEY = re.compile(r"^[A-Za-z0-9]{8}\.[A-Za-z0-9]{32}$")


def manage(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """manage.py as a shell would run it, without a terminal on stdin."""
    environment = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    environment.update(
        DATABASE_URL=database_url_for_subprocess(),
        PAYMENT_SERVICE_URL="http://127.0.0.1:9/v1/charges",
        PAYMENT_API_KEY=TEST_API_KEY,
        **(env or {}),
    )
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=Path(settings.BASE_DIR),
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def works(key: str) -> bool:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get("/api/v1/charges").status_code == 200


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_api_client_prints_only_the_key_on_stdout_and_sets_the_password_from_the_environment() -> None:
    done = manage("create_api_client", "demo", "--set-password", env={PASSWORD_ENV: "demo-password"})

    assert done.returncode == 0, done.stderr
    assert KEY.match(done.stdout.strip()) and done.stdout.count("\n") == 1
    key = done.stdout.strip()
    assert key[:8] in done.stderr and key not in done.stderr
    user = get_user_model().objects.get(username="demo")
    assert user.check_password("demo-password")
    assert works(key)


def test_a_password_is_never_an_argument() -> None:
    parser = CreateApiClient().create_parser("manage.py", "create_api_client")
    assert not [action for action in parser._actions if "password" in action.dest and action.nargs != 0]

    done = manage("create_api_client", "demo", "--password", "hunter2-hunter2")

    assert done.returncode != 0 and "unrecognized arguments" in done.stderr
    assert not get_user_model().objects.filter(username="demo").exists()


def test_without_a_terminal_or_the_variable_it_fails_with_one_line() -> None:
    done = manage("create_api_client", "demo", "--set-password")

    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"CommandError: --set-password needs {PASSWORD_ENV} in the environment or a terminal to prompt on."
    ]
    assert not get_user_model().objects.filter(username="demo").exists()


def test_the_password_is_prompted_for_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    answers = iter(["typed-password", "typed-password"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))

    key, _ = run("create_api_client", "demo", "--set-password")

    assert get_user_model().objects.get(username="demo").check_password("typed-password")
    assert works(key.strip())


def test_each_run_adds_a_key_and_rotate_revokes_the_others() -> None:
    first, err = run("create_api_client", "demo")
    second, _ = run("create_api_client", "demo", "--key-name", "ci", "--expires-in-days", "30")
    assert "Created API client 'demo'" in err and works(first.strip()) and works(second.strip())

    third, err = run("create_api_client", "demo", "--rotate")

    assert "Revoked 2 earlier key(s)" in err
    assert not works(first.strip()) and not works(second.strip()) and works(third.strip())
    ci = APIKey.objects.get(name="ci")
    assert ci.expiry_date is not None and ci.revoked


def test_api_keys_lists_creates_and_revokes() -> None:
    run("create_api_client", "shop")
    key, _ = run("api_keys", "create", "shop", "--key-name", "backup")
    key = key.strip()
    assert KEY.match(key) and works(key)

    listing, _ = run("api_keys", "list", "shop")
    lines = listing.splitlines()
    assert lines[0].split()[:2] == ["prefix", "state"] and len(lines) == 3
    assert any(line.startswith(key[:8]) and "active" in line and line.endswith("backup") for line in lines)
    assert key not in listing

    revoked, _ = run("api_keys", "revoke", key[:8])

    assert revoked.startswith(f"Revoked API key {key[:8]}")
    assert not works(key)
    listing, _ = run("api_keys", "list", "shop")
    assert any(line.startswith(key[:8]) and "revoked" in line for line in listing.splitlines())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("api_keys", "list", "nobody"), "No API client 'nobody'"),
        (("api_keys", "revoke", "zzzzzzzz"), "No active API key with prefix 'zzzzzzzz'"),
        (("create_api_client", "shop", "--expires-in-days", "0"), "--expires-in-days=0 is invalid"),
        (("api_keys", "create", "nobody"), "No API client"),
        (("create_api_client", "shop", "--key-name", "x" * 51), "expected 1 to 50 characters"),
    ],
)
def test_bad_input_is_one_message(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        run(*args)


def test_a_second_active_key_of_the_same_name_is_refused_unless_replaced() -> None:
    first, _ = run("create_api_client", "shop")

    refused = manage("create_api_client", "shop")

    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        f"CommandError: API client 'shop' already has an active key named 'default' ({first[:8]}…): add "
        "--replace to revoke it and issue a new one, or choose another --key-name."
    ]
    assert works(first.strip())
    with pytest.raises(CommandError, match="already has an active key named 'backup'"):
        run("api_keys", "create", "shop", "--key-name", "backup", "--expires-in-days", "1")
        run("api_keys", "create", "shop", "--key-name", "backup")

    second, err = run("create_api_client", "shop", "--replace")

    assert f"Revoked API key {first[:8]}… 'default'" in err
    assert not works(first.strip()) and works(second.strip())
    active = APIKey.objects.filter(user__username="shop", name="default", revoked=False)
    assert [key.prefix for key in active] == [second[:8]]


def test_replace_without_an_active_key_of_that_name_just_issues_one() -> None:
    run("create_api_client", "shop")
    key, err = run("api_keys", "create", "shop", "--key-name", "ci", "--replace")

    assert "Revoked" not in err and works(key.strip())
    assert APIKey.objects.filter(user__username="shop", revoked=False).count() == 2
