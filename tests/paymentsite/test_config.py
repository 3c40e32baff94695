from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import environ
import pytest

from paymentsite.config import EnvReader
from tests.support.config import OURS, ROOT, VALID, run_check, run_manage, service_env


def test_valid_configuration_passes_the_check() -> None:
    result = run_check()

    assert result.returncode == 0, result.stderr


def test_development_mode_needs_no_key_hosts_or_sqlite_opt_in() -> None:
    result = run_check(
        DJANGO_DEBUG="true",
        DJANGO_SECRET_KEY=None,
        DJANGO_ALLOWED_HOSTS=None,
        DB_ALLOW_SQLITE=None,
        DJANGO_SECURE_SSL_REDIRECT=None,
    )

    assert result.returncode == 0, result.stderr


MYSQL = "mysql://app:s3cr3t-pw@db.internal:3306/payments"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"DB_CONNECTION_LIMIT": "ten"}, "DB_CONNECTION_LIMIT='ten' is invalid: expected an integer >= 1"),
        ({"DB_ACQUIRE_TIMEOUT": "-1"}, "DB_ACQUIRE_TIMEOUT='-1' is invalid: expected an integer >= 1"),
        ({"PAYMENT_TIMEOUT_MS": "-5"}, "PAYMENT_TIMEOUT_MS='-5' is invalid"),
        ({"PAYMENT_SERVICE_URL": "http://pay.example.com/v1"}, "http:// is allowed only for loopback hosts"),
        ({"PAYMENT_API_KEY": ""}, "PAYMENT_API_KEY is required and is not set"),
        ({"DB_LOG_QUERIES": "maybe"}, "DB_LOG_QUERIES='maybe' is invalid: expected true or false"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is invalid: expected one of console, json"),
        ({"DATABASE_URL": "postgres://u:s3cr3t@db/x"}, "DATABASE_URL='postgres://…' is invalid"),
        # Production mode's refusals.
        ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY is not set: production mode (DJANGO_DEBUG=false)"),
        (
            {"DJANGO_SECRET_KEY": "insecure-development-key-change-me"},
            "DJANGO_SECRET_KEY='<34 characters, masked>' is invalid: production mode",
        ),
        ({"DJANGO_SECRET_KEY": "s3cr3t-but-short"}, "DJANGO_SECRET_KEY='<16 characters, masked>' is invalid"),
        ({"DJANGO_SECRET_KEY": "django-insecure-" + "s3cr3t" * 10}, "not a development key"),
        (
            {"DB_ALLOW_SQLITE": None},
            "DATABASE_URL='sqlite:////tmp/paymentsite-config-check.sqlite3' is refused in production mode",
        ),
        (
            {"DB_ALLOW_SQLITE": None, "DATABASE_URL": None},
            "DATABASE_URL is not set, and SQLite is refused in production mode (DJANGO_DEBUG=false): set "
            "DATABASE_URL=mysql://… (or DB_HOST, DB_NAME, DB_USER, DB_PASSWORD), or DB_ALLOW_SQLITE=true",
        ),
        ({"DJANGO_ALLOWED_HOSTS": None}, "DJANGO_ALLOWED_HOSTS is not set: production mode"),
        ({"DJANGO_ALLOWED_HOSTS": " , "}, "DJANGO_ALLOWED_HOSTS is not set: production mode"),
        # HTTPS behind a proxy.
        (
            {"DJANGO_SECURE_SSL_REDIRECT": None},
            "DJANGO_SECURE_SSL_REDIRECT is on but DJANGO_SECURE_PROXY_SSL_HEADER is not set",
        ),
        ({"DJANGO_SECURE_PROXY_SSL_HEADER": "X Forwarded"}, "DJANGO_SECURE_PROXY_SSL_HEADER='X Forwarded'"),
        ({"DJANGO_CSRF_TRUSTED_ORIGINS": "pay.example.com"}, "DJANGO_CSRF_TRUSTED_ORIGINS='pay.example.com'"),
        ({"DJANGO_SECURE_HSTS_SECONDS": "-1"}, "DJANGO_SECURE_HSTS_SECONDS='-1' is invalid"),
        # The database: URL, parts, TLS.
        ({"DATABASE_URL": MYSQL, "DB_HOST": "db2"}, "DATABASE_URL and DB_HOST are both set"),
        ({"DATABASE_URL": MYSQL, "DB_PASSWORD": "s3cr3t"}, "DATABASE_URL and DB_PASSWORD are both set"),
        ({"DATABASE_URL": None, "DB_HOST": "db.internal"}, "DB_NAME, DB_USER not set"),
        (
            {"DATABASE_URL": None, "DB_HOST": "db", "DB_NAME": "x", "DB_USER": "u", "DB_PORT": "99999"},
            "DB_PORT='99999' is invalid: expected an integer >= 1 and <= 65535",
        ),
        (
            {"DATABASE_URL": "mysql://app:s3cr3t-pw@db.internal:99999/x"},
            "DATABASE_URL='mysql://app:***@db.internal:99999/x' is invalid: expected a port",
        ),
        ({"DATABASE_URL": "mysql://app:s3cr3t-pw@db.internal"}, "DATABASE_URL='mysql://app:***@db.internal'"),
        (
            {"DATABASE_URL": MYSQL, "DB_SSL_MODE": "STRICT"},
            "DB_SSL_MODE='STRICT' is invalid: expected one of",
        ),
        ({"DATABASE_URL": MYSQL + "?ssl_mode=on"}, "DATABASE_URL option ssl_mode='ON' is invalid"),
        (
            {"DATABASE_URL": MYSQL + "?sslca=/ca.pem"},
            "DATABASE_URL option='sslca' is invalid: expected one of",
        ),
        ({"DATABASE_URL": MYSQL, "DB_SSL_CA": "/nonexistent/ca.pem"}, "DB_SSL_CA='/nonexistent/ca.pem'"),
        ({"DB_SSL_MODE": "REQUIRED"}, "DB_SSL_MODE set, but TLS applies to a MySQL database only"),
        (
            {"EVENTS_CA_BUNDLE": "/nonexistent/ca.pem"},
            "EVENTS_CA_BUNDLE='/nonexistent/ca.pem' is invalid: expected the path of a readable PEM file",
        ),
        # The provider's events: Standard Webhooks secrets, masked.
        (
            {"PAYMENT_WEBHOOK_SECRET": "s3cr3t"},
            "PAYMENT_WEBHOOK_SECRET='<secret 1 of 1, masked>' is invalid: expected whsec_<base64 of 24 to 64",
        ),
        (
            {"PAYMENT_WEBHOOK_SECRET": "whsec_" + "A" * 32 + " whsec_s3cr3t!"},
            "PAYMENT_WEBHOOK_SECRET='<secret 2 of 2, masked>' is invalid",
        ),
        ({"PAYMENT_WEBHOOK_SECRET": "whsec_czNjcjN0"}, "(this one is 6 bytes)"),
    ],
)
def test_bad_value_stops_the_check_naming_variable_and_value(
    overrides: dict[str, str | None], expected: str
) -> None:
    result = run_check(**overrides)

    assert result.returncode != 0
    assert expected in result.stderr
    assert "s3cr3t" not in result.stderr, "a password or key must never be echoed"
    assert len([line for line in result.stderr.splitlines() if "paymentsite.E001" in line]) == 1


def run_python(code: str, **overrides: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=service_env(**overrides),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"DB_CONNECTION_LIMIT": "0"}, "DB_CONNECTION_LIMIT='0' is invalid"),
        ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY is not set"),
    ],
)
def test_wsgi_start_up_refuses_a_bad_value(overrides: dict[str, str | None], expected: str) -> None:
    result = run_python("import paymentsite.wsgi", DJANGO_SETTINGS_MODULE="paymentsite.settings", **overrides)

    assert result.returncode != 0
    assert expected in result.stderr


def test_gunicorn_refuses_fewer_threads_than_the_provider_bulkhead() -> None:
    result = run_python(
        "import runpy; runpy.run_path('paymentsite/gunicorn.conf.py')",
        GUNICORN_THREADS="8",
        PAYMENT_MAX_CONCURRENT_CALLS="8",
    )

    assert result.returncode != 0
    assert "GUNICORN_THREADS=8 must exceed PAYMENT_MAX_CONCURRENT_CALLS=8" in result.stderr


# The production configuration README.md documents ---------------------------------


def readme_production_env() -> dict[str, str]:
    """The variables of README's production example (the block that starts `# Production`)."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(# Production.*?)```", readme, re.DOTALL)
    assert block, "README.md's Configuration section shows a production example"
    pairs = (line.split("=", 1) for line in block.group(1).splitlines() if re.match(r"^[A-Z_]+=", line))
    return {name: value.strip() for name, value in pairs}


def test_readme_production_configuration_passes_check_deploy_without_a_warning(tmp_path: Path) -> None:
    env = readme_production_env()
    placeholders = {name for name, value in env.items() if value.startswith("<")}
    ca = tmp_path / "db-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")  # only its existence is checked before connecting
    env.update({name: secrets.token_urlsafe(50) for name in placeholders}, DB_SSL_CA=str(ca))

    result = run_manage("check", "--deploy", "--fail-level", "WARNING", **{**dict.fromkeys(VALID), **env})

    assert {"DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL"} <= env.keys()
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


# Database options, read in this process -----------------------------------------------


def reader(monkeypatch: pytest.MonkeyPatch, **variables: str) -> EnvReader:
    for name in [name for name in os.environ if name.startswith(OURS)]:
        monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return EnvReader(environ.Env())


def test_url_options_are_merged_with_tls_files_and_mode(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca, cert = tmp_path / "ca.pem", tmp_path / "cert.pem"
    ca.touch()
    cert.touch()
    config = reader(
        monkeypatch,
        DATABASE_URL=f"mysql://app:pw@db:3306/payments?connect_timeout=5&ssl_ca={ca}&sql_mode=STRICT_ALL_TABLES",
        DB_SSL_CERT=str(cert),
    )

    database = config.database("sqlite:///unused", debug=False)
    options = config.mysql_options(database["OPTIONS"])

    assert config.errors == []
    assert options == {
        "charset": "utf8mb4",
        "connect_timeout": 5,
        "sql_mode": "STRICT_ALL_TABLES",
        "ssl": {"ca": str(ca), "cert": str(cert)},
        "ssl_mode": "VERIFY_IDENTITY",
    }


@pytest.mark.parametrize(
    ("url_query", "variables", "expected_mode"),
    [
        ("", {}, None),
        ("?ssl_mode=required", {}, "REQUIRED"),
        ("?ssl_mode=REQUIRED", {"DB_SSL_MODE": "verify_ca"}, "VERIFY_CA"),
        ("", {"DB_SSL_MODE": "PREFERRED"}, "PREFERRED"),
    ],
)
def test_ssl_mode_from_the_url_or_db_ssl_mode_which_wins(
    monkeypatch: pytest.MonkeyPatch, url_query: str, variables: dict[str, str], expected_mode: str | None
) -> None:
    config = reader(monkeypatch, DATABASE_URL=f"mysql://app@db/payments{url_query}", **variables)

    options = config.mysql_options(config.database("sqlite:///unused", debug=False).get("OPTIONS", {}))

    assert config.errors == []
    assert options.get("ssl_mode") == expected_mode


@pytest.mark.parametrize(
    ("url_query", "expected"),
    [
        # Once per physical connection, by the driver; Django sends nothing on a pool checkout.
        (
            "",
            {
                "init_command": "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                "isolation_level": None,
            },
        ),
        (
            "?isolation_level=repeatable%20read",
            {
                "init_command": "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                "isolation_level": None,
            },
        ),
        # mysqlclient runs one init_command: the URL's own stays, and Django sets its default
        # level, READ COMMITTED, on every checkout as before.
        (
            "?init_command=SET%20sql_mode%3D%27STRICT_ALL_TABLES%27",
            {"init_command": "SET sql_mode='STRICT_ALL_TABLES'"},
        ),
        # Left to Django, which refuses it on connecting (not interpolated into a statement).
        ("?isolation_level=snapshot", {"isolation_level": "snapshot"}),
    ],
)
def test_pooled_connections_get_their_isolation_level_once(url_query: str, expected: dict) -> None:
    result = run_python(
        "import json; from django.conf import settings; "
        "print(json.dumps(settings.DATABASES['default']['OPTIONS']))",
        DJANGO_SETTINGS_MODULE="paymentsite.settings",
        DATABASE_URL=f"mysql://app@127.0.0.1:3306/payments{url_query}",
    )

    assert result.returncode == 0, result.stderr
    options = json.loads(result.stdout)
    assert {key: options[key] for key in ("init_command", "isolation_level") if key in options} == expected
    assert options["autocommit"] is True, "opened in the mode Django puts them in"


def test_db_parts_build_the_database_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    config = reader(
        monkeypatch,
        DB_HOST="db.internal",
        DB_PORT="3307",
        DB_NAME="payments",
        DB_USER="app",
        DB_PASSWORD="p@ss",
    )

    database = config.database("sqlite:///unused", debug=False)

    assert config.errors == []
    assert database == {
        "ENGINE": "django.db.backends.mysql",
        "HOST": "db.internal",
        "PORT": 3307,
        "NAME": "payments",
        "USER": "app",
        "PASSWORD": "p@ss",
    }


def test_webhook_secrets_are_read_separated_by_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = "whsec_" + "A" * 32, "whsec_" + "B" * 86
    config = reader(monkeypatch, PAYMENT_WEBHOOK_SECRET=f" {old}  {new} ")

    assert config.webhook_secrets("PAYMENT_WEBHOOK_SECRET") == (old, new)
    assert config.errors == []


def test_unset_webhook_secret_turns_events_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert reader(monkeypatch).webhook_secrets("PAYMENT_WEBHOOK_SECRET") == ()


# README's table and .env.example ------------------------------------------------------

NAME = re.compile(r"`([A-Z][A-Z0-9_]+)`")


def test_readme_table_and_env_example_list_every_variable_in_the_same_order() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| variable | default | meaning |") :].split("\n\n", 1)[0]
    in_table = [
        name
        for row in table.splitlines()[2:]
        for name in NAME.findall(row.split("|")[1])
        if not name.startswith("VUE_APP_")  # older names, accepted as aliases
    ]
    in_example = re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    settings_source = (ROOT / "paymentsite" / "settings.py").read_text()
    read_by_settings = set(re.findall(r"config\.\w+\(\s*\"([A-Z][A-Z0-9_]+)\"", settings_source))

    assert in_table == in_example
    assert read_by_settings - set(in_table) == set()
