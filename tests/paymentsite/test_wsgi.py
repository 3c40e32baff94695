"""paymentsite/wsgi.py: the server starts the provider probe, before anyone reads /health/.

`manage.py runserver` (what `make run` serves with) loads this module when it starts; the
probe's target is a recording HTTP server, so the test sees the probe arrive while nothing
has asked /health/ yet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings

from fakeprovider import FakeProvider
from tests.support.gunicorn import free_port, wait_until_live
from tests.support.service import TEST_API_KEY, database_url_for_subprocess

START_TIMEOUT_S = 60
PROBE_TIMEOUT_S = 30


class ProbeTarget:
    """An HTTP server that answers 200 to every GET and remembers the paths asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.probed = threading.Event()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                target.paths.append(self.path)
                target.probed.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"


@pytest.fixture
def probe_target() -> Iterator[ProbeTarget]:
    target = ProbeTarget()
    thread = threading.Thread(target=target.server.serve_forever, daemon=True)
    thread.start()
    yield target
    target.server.shutdown()
    target.server.server_close()


@pytest.mark.slow
def test_runserver_starts_the_provider_probe_before_the_first_health_read(
    transactional_db: None, fake_provider: FakeProvider, probe_target: ProbeTarget, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "PAYMENT_SERVICE_URL": fake_provider.url,
        "PAYMENT_HEALTH_URL": probe_target.url,
        "PAYMENT_API_KEY": TEST_API_KEY,
    }
    log_path = tmp_path / "runserver.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_live(f"http://127.0.0.1:{port}", server, log_path, START_TIMEOUT_S)
        assert probe_target.probed.wait(PROBE_TIMEOUT_S), "no probe before the first /health/ read"
        assert probe_target.paths[0] == "/health"
    finally:
        server.terminate()
        server.wait(timeout=15)
