"""paymentsite.gunicorn_worker on a real gunicorn: connections that have sent nothing yet hold no
thread, so a request on a new connection is answered while more idle connections are open than
the worker has threads. Stock gthread is run alongside, to show what the subclass is for and to
notice the day gunicorn fixes it upstream (benoitc/gunicorn#3634)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from fakeprovider import FakeProvider
from tests.support.gunicorn import serving
from tests.support.service import TEST_API_KEY, database_url_for_subprocess

THREADS = 4
IDLE_CONNECTIONS = 2 * THREADS
ANSWER_WITHIN_S = 3  # stock gthread's threads each wait five seconds on an idle connection


@contextlib.contextmanager
def one_worker(
    fake_provider: FakeProvider, tmp_path: Path, worker_class: str | None = None
) -> Iterator[tuple[str, int]]:
    settings = {
        "DATABASE_URL": database_url_for_subprocess(),
        "PAYMENT_SERVICE_URL": fake_provider.url,
        "PAYMENT_API_KEY": TEST_API_KEY,
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": str(THREADS),
        "PAYMENT_MAX_CONCURRENT_CALLS": str(THREADS - 1),
        "LOG_LEVEL": "WARNING",
    }
    if worker_class:
        settings["GUNICORN_CMD_ARGS"] = f"--worker-class={worker_class}"  # over the config file
    with serving(settings, tmp_path / "gunicorn.log") as url:
        yield url, int(url.rsplit(":", 1)[1])


@contextlib.contextmanager
def idle_connections(port: int) -> Iterator[list[socket.socket]]:
    """IDLE_CONNECTIONS accepted TCP connections that have sent nothing."""
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.create_connection(("127.0.0.1", port)))
            for _ in range(IDLE_CONNECTIONS)
        ]
        time.sleep(0.5)  # accepted and handed on by the worker
        yield sockets


def answer_on(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    sock.settimeout(ANSWER_WITHIN_S)
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    return answer


@pytest.mark.slow
def test_idle_connections_leave_the_threads_to_requests(
    transactional_db: None, fake_provider: FakeProvider, tmp_path: Path
) -> None:
    with one_worker(fake_provider, tmp_path) as (url, port), idle_connections(port) as idle:
        started = time.monotonic()
        live = requests.get(f"{url}/health/live", headers={"Connection": "close"}, timeout=ANSWER_WITHIN_S)
        assert live.status_code == 200, "a new connection waited behind the idle ones"
        assert time.monotonic() - started < ANSWER_WITHIN_S
        # An idle connection is still served once it speaks, on whichever thread is free.
        assert answer_on(idle[0]).startswith(b"HTTP/1.1 200 ")
        assert answer_on(idle[-1]).startswith(b"HTTP/1.1 200 ")


@pytest.mark.slow
def test_stock_gthread_holds_a_thread_per_idle_connection(
    transactional_db: None, fake_provider: FakeProvider, tmp_path: Path
) -> None:
    with (
        one_worker(fake_provider, tmp_path, worker_class="gthread") as (url, port),
        idle_connections(port),
        pytest.raises(requests.Timeout),
    ):
        requests.get(f"{url}/health/live", headers={"Connection": "close"}, timeout=ANSWER_WITHIN_S)
