"""Database TLS that means it, against MariaDB servers the test starts itself.

One server has TLS with a certificate from a throwaway CA and refuses every connection
without TLS (`require_secure_transport`), so whatever works against it went through TLS;
the other has no TLS at all. The connect options come from the settings' own reader
(paymentsite.config), and the service paths run as real processes: manage.py commands
and gunicorn's /health/, through the pooled backend.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import environ
import MySQLdb
import pytest

from bench.infra import PYTHON, ROOT, Gunicorn, PrivateMariaDB, manage
from paymentsite.config import EnvReader
from tests.support.drills import Certificates, requires_private_mariadb

pytestmark = [pytest.mark.slow, requires_private_mariadb]

DATABASE = "tlsdrill"
CR_SSL_CONNECTION_ERROR = 2026
ER_ACCESS_DENIED = 1045  # what MariaDB answers a plain-text login under require_secure_transport


def options_from(**variables: str) -> dict[str, Any]:
    """mysqlclient's options as settings.py builds them from these variables alone."""
    env = environ.Env()
    env.ENVIRON = variables
    config = EnvReader(env)
    database = config.database("sqlite:///unused", debug=False)
    options = config.mysql_options(database.get("OPTIONS", {}))
    assert config.errors == []
    return options


def connect(port: int, **variables: str) -> MySQLdb.Connection:
    url = f"mysql://root@127.0.0.1:{port}/mysql"
    return MySQLdb.connect(
        host="127.0.0.1", port=port, user="root", **options_from(DATABASE_URL=url, **variables)
    )


def cipher(connection: MySQLdb.Connection) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        return cursor.fetchone()[1]


def test_connects_with_the_right_ca_and_checks_the_server_identity(
    tls_mariadb: PrivateMariaDB, certificates: Certificates
) -> None:
    assert options_from(DATABASE_URL="mysql://root@db/x", DB_SSL_CA=str(certificates.ca))["ssl_mode"] == (
        "VERIFY_IDENTITY"
    ), "a CA alone means: verify the certificate and the host name"

    connection = connect(tls_mariadb.port, DB_SSL_CA=str(certificates.ca))
    try:
        assert cipher(connection), "the connection is encrypted"
    finally:
        connection.close()


def test_refuses_a_server_whose_certificate_another_ca_signed(
    tls_mariadb: PrivateMariaDB, certificates: Certificates
) -> None:
    with pytest.raises(MySQLdb.OperationalError) as refused:
        connect(tls_mariadb.port, DB_SSL_CA=str(certificates.other_ca))

    assert refused.value.args[0] == CR_SSL_CONNECTION_ERROR


def test_the_server_refuses_plain_text(tls_mariadb: PrivateMariaDB) -> None:
    """So everything that works against it below went through TLS."""
    with pytest.raises(MySQLdb.OperationalError) as refused:
        MySQLdb.connect(host="127.0.0.1", port=tls_mariadb.port, user="root", ssl_mode="DISABLED")

    assert refused.value.args[0] == ER_ACCESS_DENIED


def database_env(base: dict[str, Any], **variables: str) -> dict[str, str]:
    """The service's environment with only this database (no SQLite opt-in to fall back on)."""
    return {
        **{key: value for key, value in base.items() if not key.startswith(("DATABASE_URL", "DB_"))},
        "DB_ALLOW_SQLITE": "false",
        **variables,
    }


def run_manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_service_commands_and_health_go_through_tls(
    tls_mariadb: PrivateMariaDB,
    certificates: Certificates,
    service_env: dict[str, Any],
    tmp_path: Path,
) -> None:
    connection = connect(tls_mariadb.port, DB_SSL_CA=str(certificates.ca))
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")
    connection.close()
    # The URL's own options (merged, not dropped) for one process, the DB_* parts for the other.
    url = f"mysql://root@127.0.0.1:{tls_mariadb.port}/{DATABASE}?ssl_ca={certificates.ca}&connect_timeout=5"
    by_url = database_env(service_env, DATABASE_URL=url)
    by_parts = database_env(
        service_env,
        DB_HOST="127.0.0.1",
        DB_PORT=str(tls_mariadb.port),
        DB_NAME=DATABASE,
        DB_USER="root",
        DB_SSL_CA=str(certificates.ca),
    )

    manage("migrate", "--noinput", env=by_url)
    reconciled = run_manage("reconcile_payments", "--dry-run", env=by_parts)
    with (
        Gunicorn(env=by_url, log_path=tmp_path / "gunicorn.log", workers=1) as server,
        urllib.request.urlopen(f"{server.url}/health/", timeout=10) as response,
    ):
        health = (response.status, json.loads(response.read())["status"])

    assert reconciled.returncode == 0, reconciled.stderr
    assert health[0] == 200 and health[1] in {"pass", "warn"}, "the database check passed: it connected"


def test_a_wrong_ca_stops_a_command(
    tls_mariadb: PrivateMariaDB, certificates: Certificates, service_env: dict[str, Any]
) -> None:
    url = f"mysql://root@127.0.0.1:{tls_mariadb.port}/mysql"
    env = database_env(service_env, DATABASE_URL=url, DB_SSL_CA=str(certificates.other_ca))

    result = run_manage("reconcile_payments", "--dry-run", env=env)

    assert result.returncode != 0
    assert "TLS/SSL error" in result.stderr


@pytest.mark.parametrize("mode", ["REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY"])
def test_a_server_without_tls_is_refused(
    plain_mariadb: PrivateMariaDB, certificates: Certificates, service_env: dict[str, Any], mode: str
) -> None:
    url = f"mysql://root@127.0.0.1:{plain_mariadb.port}/mysql"
    env = database_env(service_env, DATABASE_URL=url, DB_SSL_MODE=mode, DB_SSL_CA=str(certificates.ca))
    if mode == "REQUIRED":
        del env["DB_SSL_CA"]  # encrypt, no certificate check

    result = run_manage("reconcile_payments", "--dry-run", env=env)

    assert result.returncode != 0
    assert "TLS/SSL error" in result.stderr
