"""Network helpers of the tests: a port nothing listens on, a resolver that goes silent."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HANGING_HOST = "hangs.paymentsite.test"


class HangingResolver:
    """Name lookups of HANGING_HOST that get no answer until `release()` (or `hang_s`), as from
    a resolver that has gone silent; every other name resolves as always.

    The one stand-in of the tests' network: a silent name server would need the machine's
    resolv.conf changed, for every process on it. It replaces socket.getaddrinfo, the call the
    service makes, and counts the lookups that are hanging now."""

    def __init__(self, hang_s: float = 30.0) -> None:
        self.hang_s = hang_s
        self.released = threading.Event()
        self.hanging = 0
        self._lock = threading.Lock()
        self._real = socket.getaddrinfo

    def getaddrinfo(self, host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != HANGING_HOST:
            return self._real(host, *args, **kwargs)
        with self._lock:
            self.hanging += 1
        try:
            self.released.wait(self.hang_s)
        finally:
            with self._lock:
                self.hanging -= 1
        return self._real("127.0.0.1", *args, **kwargs)  # an answer, had anyone waited for it

    def release(self) -> None:
        """The resolver answers again: HANGING_HOST is 127.0.0.1, at once and for the lookups waiting."""
        self.released.set()

    def go_silent(self) -> None:
        self.released.clear()

    def wait_until_hanging(self, count: int, within_s: float = 10.0) -> None:
        """Until `count` lookups hang (0, after release(): those left have finished on their threads)."""
        until = time.monotonic() + within_s
        while self.hanging != count and time.monotonic() < until:
            time.sleep(0.01)
        assert self.hanging == count


@pytest.fixture
def hanging_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[HangingResolver]:
    resolver = HangingResolver()
    monkeypatch.setattr(socket, "getaddrinfo", resolver.getaddrinfo)
    yield resolver
    resolver.release()
    resolver.wait_until_hanging(0)
