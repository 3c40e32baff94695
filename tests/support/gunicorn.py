"""The service under a real gunicorn (paymentsite/gunicorn.conf.py), for the tests that need its workers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import requests
from django.conf import settings as django_settings

START_TIMEOUT_S = 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gunicorn_command() -> list[str]:
    return [str(Path(sys.executable).with_name("gunicorn")), "-c", "paymentsite/gunicorn.conf.py"]


def wait_until_live(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    """Until the server at url answers /health/live (which never touches the provider probe),
    failing with its log if it exits or takes longer than timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(f"{url}/health/live", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert process.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, f"{process.args[0]} did not start:\n{log_path.read_text()}"
        time.sleep(0.2)


@contextlib.contextmanager
def serving(settings: Mapping[str, str], log_path: Path) -> Iterator[str]:
    """gunicorn on a free loopback port with these settings over the test's environment, until
    /health/live answers; yields its URL, and stops it (SIGTERM) afterwards. Its output goes to
    log_path, quoted when it stops before answering."""
    port = free_port()
    env = {**os.environ, **settings, "GUNICORN_BIND": f"127.0.0.1:{port}"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            gunicorn_command(), cwd=django_settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_live(url, process, log_path, START_TIMEOUT_S)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=15)
