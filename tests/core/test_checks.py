"""core.checks and manage.py: a MariaDB database that does not exist is one line from every command."""

from __future__ import annotations

import os

import pytest
from django.conf import settings

from tests.support.config import run_manage
from tests.support.service import requires_pooled_mysql

pytestmark = requires_pooled_mysql


def database_url(name: str) -> str:
    """The test run's MariaDB server, naming the database `name`."""
    database = settings.DATABASES["default"]
    password = f":{database['PASSWORD']}" if database["PASSWORD"] else ""
    return f"mysql://{database['USER']}{password}@{database['HOST']}:{database['PORT'] or 3306}/{name}"


def missing_database_url() -> str:
    return database_url("no_such_db_" + os.environ.get("DB_TEST_NAME", "test"))


def test_check_reports_a_missing_database_as_one_error_and_fails() -> None:
    result = run_manage("check", DATABASE_URL=missing_database_url())

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "paymentsite.E002" in line]
    assert len(errors) == 1, result.stderr
    assert "Unknown database 'no_such_db_" in errors[0]
    assert "CREATE DATABASE" in errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("migrate", "--noinput"),
        ("migrate", "--noinput", "--skip-checks"),
        ("create_api_client", "shop"),
        ("reconcile_payments", "--dry-run"),
        ("showmigrations", "--skip-checks"),
    ],
)
def test_every_command_stops_on_a_missing_database_with_one_line(command: tuple[str, ...]) -> None:
    result = run_manage(*command, DATABASE_URL=missing_database_url())

    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    mentions = [line for line in result.stderr.splitlines() if "Unknown database" in line]
    assert len(mentions) == 1, result.stderr
    assert "create it first" in mentions[0]


def test_check_passes_when_the_database_exists() -> None:
    result = run_manage("check", DATABASE_URL=database_url(settings.DATABASES["default"]["NAME"]))

    assert result.returncode == 0, result.stderr
