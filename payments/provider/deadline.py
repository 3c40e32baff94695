"""A hard wall-clock bound on every HTTP attempt: its socket is shut down at the deadline.

`requests` and urllib3 apply the read timeout to each socket read, and urllib3's
`Timeout(total=...)` only to the time between reads too (its docstring: "if a server streams
one byte every fifteen seconds, a timeout of 20 seconds will not trigger"). A provider, or a
proxy, that trickles its answer a byte at a time keeps one attempt open for as long as it
likes, and the service can no longer say when a request may still be in flight. No library
bounds the whole exchange (status line, headers and body) of a blocking `requests` call, so
this module does it by hand:

- `AttemptWatch` is one attempt's deadline. The connection classes below attach themselves to
  the calling thread's current watch when they connect and when they send a request, and detach
  when the pool takes them back (`_put_conn`, urllib3's one place a connection is released).
- `_Watchdog` is one daemon thread per process that, at each deadline, shuts down the socket of
  every connection still attached to that watch (`shutdown(SHUT_RDWR)` wakes a read blocked in
  another thread at once, whatever the peer sends). The read then fails or sees the end of the
  stream; `getresponse` then raises a socket timeout, and the adapter, which asks
  `AttemptWatch.cut` for a body cut short too, calls the attempt a timeout: the request was sent,
  so the provider may have charged.
- A connection cut at a deadline is closed before the pool keeps it, so no later request reuses it.

The hooks are urllib3's `HTTPConnection.connect`/`request`/`getresponse` and `HTTPConnectionPool._put_conn`
(stable across urllib3 1.x and 2.x); `tests/payments/provider/test_deadline.py` fails if they
stop being called. SOCKS proxies use urllib3's own connection classes and are not bounded.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager, ProxyManager

_current = threading.local()


class AttemptWatch:
    """One attempt's deadline and the connections it may have to cut."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._lock = threading.Lock()
        self._connections: set[HTTPConnection] = set()
        self._expired = False
        self._cut = False
        self._done = False

    @property
    def cut(self) -> bool:
        """Whether a connection of this attempt was shut down at the deadline."""
        with self._lock:
            return self._cut

    def attach(self, connection: HTTPConnection) -> None:
        with self._lock:
            if self._done:
                return
            self._connections.add(connection)
            if self._expired:  # connected after the deadline: cut at once
                self._cut_locked(connection)

    def detach(self, connection: HTTPConnection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def expire(self) -> None:
        """The deadline has come: shut down every connection still attached."""
        with self._lock:
            if self._done:
                return
            self._expired = True
            for connection in self._connections:
                self._cut_locked(connection)

    def finish(self) -> None:
        """The attempt is over: nothing of it is cut any more."""
        with self._lock:
            self._done = True
            self._connections.clear()

    def _cut_locked(self, connection: HTTPConnection) -> None:
        connection._cut_at_deadline = True  # type: ignore[attr-defined]
        self._cut = True
        sock = getattr(connection, "sock", None)
        if sock is None:
            return  # still connecting: attach() after connect() cuts it
        # socket.socket's own shutdown, also for an SSLSocket: its override drops the TLS
        # object under a read that another thread may be blocked in. OSError: already closed.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One thread per process that expires watches at their deadlines."""

    def __init__(self) -> None:
        self._order = itertools.count()
        self._reset()
        # A forked child (a gunicorn worker) has no watchdog thread, and maybe a held lock.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, AttemptWatch]] = []
        self._started = False

    def schedule(self, watch: AttemptWatch) -> None:
        with self._condition:
            if not self._started:
                self._started = True
                threading.Thread(target=self._run, name="provider-attempt-watchdog", daemon=True).start()
            heapq.heappush(self._heap, (watch.deadline, next(self._order), watch))
            self._condition.notify()

    def _run(self) -> None:
        condition = self._condition
        while True:
            due: list[AttemptWatch] = []
            with condition:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
                if not due:
                    wait_s = self._heap[0][0] - now if self._heap else None
                    condition.wait(wait_s)
                    continue
            for watch in due:
                watch.expire()


_watchdog = _Watchdog()


def start_attempt(bound_s: float) -> AttemptWatch:
    """Begin an attempt on this thread: its connections are cut `bound_s` from now."""
    finish_attempt()
    watch = AttemptWatch(time.monotonic() + bound_s)
    _current.watch = watch
    _watchdog.schedule(watch)
    return watch


def finish_attempt() -> None:
    watch: AttemptWatch | None = getattr(_current, "watch", None)
    if watch is not None:
        watch.finish()
        _current.watch = None


def _attach(connection: HTTPConnection) -> None:
    watch: AttemptWatch | None = getattr(_current, "watch", None)
    if watch is not None:
        connection._deadline_watch = watch  # type: ignore[attr-defined]
        watch.attach(connection)


class _BoundedConnectionMixin:
    def connect(self) -> None:
        _attach(self)  # type: ignore[arg-type]
        super().connect()  # type: ignore[misc]
        _attach(self)  # type: ignore[arg-type]  # cuts the new socket if the deadline passed meanwhile

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]

    def getresponse(self) -> Any:
        response = super().getresponse()  # type: ignore[misc]
        watch: AttemptWatch | None = getattr(self, "_deadline_watch", None)
        if watch is not None and watch.cut:
            # The status line and headers read up to a shut-down socket may look complete. A
            # socket timeout here is what urllib3 turns into a read timeout, which it retries
            # (safe: the same Idempotency-Key) while the call's deadline allows.
            raise TimeoutError("the attempt's deadline passed before its answer was read")
        return response


class BoundedHTTPConnection(_BoundedConnectionMixin, HTTPConnection):
    pass


class BoundedHTTPSConnection(_BoundedConnectionMixin, HTTPSConnection):
    pass


class _BoundedPoolMixin:
    def _put_conn(self, conn: HTTPConnection | None) -> None:
        if conn is not None:
            watch: AttemptWatch | None = getattr(conn, "_deadline_watch", None)
            if watch is not None:
                watch.detach(conn)
                conn._deadline_watch = None  # type: ignore[attr-defined]
            if getattr(conn, "_cut_at_deadline", False):
                conn.close()  # never reused: the next request opens a fresh socket
                conn._cut_at_deadline = False  # type: ignore[attr-defined]
        super()._put_conn(conn)  # type: ignore[misc]


class BoundedHTTPConnectionPool(_BoundedPoolMixin, HTTPConnectionPool):
    ConnectionCls = BoundedHTTPConnection


class BoundedHTTPSConnectionPool(_BoundedPoolMixin, HTTPSConnectionPool):
    ConnectionCls = BoundedHTTPSConnection


_POOL_CLASSES = {"http": BoundedHTTPConnectionPool, "https": BoundedHTTPSConnectionPool}


class BoundedHTTPAdapter(HTTPAdapter):
    """requests' adapter whose connections (direct or through an HTTP(S) proxy) are bounded."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, ProxyManager):  # not SOCKS: that has connection classes of its own
            manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager
