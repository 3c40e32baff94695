"""What the drills share besides their fixtures (tests/drills/conftest.py): the skip when no
private MariaDB can be started, and the certificates the TLS drill is given."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.infra import PrivateMariaDB

requires_private_mariadb = pytest.mark.skipif(
    not PrivateMariaDB.available(),
    reason="needs mariadb-install-db and mariadbd (Debian: mariadb-server) to start a MariaDB of its own",
)


@dataclass(frozen=True)
class Certificates:
    """A throwaway CA, a server certificate it signed for 127.0.0.1, and an unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    other_ca: Path
