from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.infra import PrivateMariaDB, query
from fakeprovider import FakeProvider
from tests.support.drills import Certificates
from tests.support.service import TEST_API_KEY


@pytest.fixture
def service_env(fake_provider: FakeProvider) -> dict[str, Any]:
    """What a service process needs besides DATABASE_URL: the session's fake provider."""
    return {
        **os.environ,
        "PAYMENT_SERVICE_URL": fake_provider.url,
        "PAYMENT_API_KEY": TEST_API_KEY,
        "GUNICORN_THREADS": "4",
        "PAYMENT_MAX_CONCURRENT_CALLS": "3",
        "LOG_LEVEL": "WARNING",
    }


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, capture_output=True, check=True, timeout=60)


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Made with the openssl command line; the server's has 127.0.0.1 as an IP SAN (VERIFY_IDENTITY)."""
    directory = tmp_path_factory.mktemp("tls")
    for name in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", f"/CN=paymentsite test {name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            cwd=directory,
        )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr", cwd=directory,
    )  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "1", "-extfile", "san.cnf", "-out", "server.pem", cwd=directory,
    )  # fmt: skip
    return Certificates(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        other_ca=directory / "other-ca.pem",
    )


@pytest.fixture(scope="module")
def tls_mariadb(certificates: Certificates) -> Iterator[PrivateMariaDB]:
    """A MariaDB of its own with TLS that refuses every connection without it.

    Grant tables are on (root without a password), since `require_secure_transport` is
    not enforced without them; it is switched on once the server is ready.
    """
    with PrivateMariaDB(
        server_args=[
            f"--ssl-ca={certificates.ca}",
            f"--ssl-cert={certificates.server_cert}",
            f"--ssl-key={certificates.server_key}",
            "--skip-grant-tables=OFF",
        ]
    ) as mariadb:
        query(port=mariadb.port, database="mysql", sql="SET GLOBAL require_secure_transport = ON")
        yield mariadb


@pytest.fixture(scope="module")
def plain_mariadb() -> Iterator[PrivateMariaDB]:
    """A MariaDB of its own without TLS."""
    with PrivateMariaDB() as mariadb:
        yield mariadb
