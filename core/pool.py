"""What each database pool in this process is doing: statistics, events, checkout waits, exhaustion.

django-db-connection-pool builds one SQLAlchemy QueuePool per alias per process
on the first query (core.db finds it). A class-level SQLAlchemy
`first_connect` listener instruments it once: pool events are counted, and the pool's
`_do_get` (the one place a checkout waits, and where an exhausted pool raises
its TimeoutError) is wrapped to time the wait and count the exhaustion at its
source, whatever code path asked for the connection.

The hot path (every checkout and checkin) adds no lock of its own: wait samples
go to a bounded deque, whose append is atomic, and Prometheus counters keep
their own tiny lock. Only rare events (exhaustion, new or invalidated
connections) take the monitor's lock.

The same listener sets how a connection is reset when it goes back. SQLAlchemy's
default rolls back on every checkin: a ROLLBACK per checkout, although a
connection in autocommit (Django's mode outside an atomic block) has no
transaction to end. The pool instead rolls back only a connection whose
autocommit is off, which is every connection Django returns inside an atomic
block; mysqlclient's get_autocommit() reads the server status flags of the last
reply, so asking costs no round trip. What it cannot see is a transaction
opened by an explicit START TRANSACTION under autocommit: nothing here sends one
(Django's atomic blocks turn autocommit off instead). SQLAlchemy documents the
`reset` event with reset_on_return=None as the way to replace its reset;
dj_db_conn_pool does not pass reset_on_return through, hence the attribute is
set on each new pool. Were that attribute to change, the default ROLLBACK would
stay, and tests/core/test_pool.py counts the ROLLBACKs.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone
from sqlalchemy import event
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import PoolResetState, QueuePool, reset_none

from core import metrics
from core.db import get_pool, pools
from core.events import log_event

logger = logging.getLogger("health.pool")  # the name it had before the move

WAIT_SAMPLES = 1024
# Exhaustions closer together than this are one burst, logged once.
EXHAUSTION_BURST_GAP_S = 10.0
UTILIZATION_WARN = 0.8


@dataclass
class PoolMonitor:
    alias: str
    wait_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WAIT_SAMPLES))
    exhausted_total: int = 0
    last_exhausted_at: datetime | None = None
    connections_opened_total: int = 0
    connections_invalidated_total: int = 0
    _last_exhausted_monotonic: float = -math.inf
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record_wait(self, wait_s: float) -> None:
        self.wait_ms.append(wait_s * 1000)
        metrics.POOL_CHECKOUT_WAIT_SECONDS.labels(self.alias).observe(wait_s)

    def record_exhausted(self, pool: QueuePool) -> None:
        now = time.monotonic()
        with self._lock:
            self.exhausted_total += 1
            new_burst = now - self._last_exhausted_monotonic > EXHAUSTION_BURST_GAP_S
            self._last_exhausted_monotonic = now
            self.last_exhausted_at = timezone.now()
            exhausted_total = self.exhausted_total
        metrics.POOL_EXHAUSTED.labels(self.alias).inc()
        if new_burst:
            values = pool_values(pool)
            log_event(
                logger,
                "db.pool_exhausted",
                level=logging.WARNING,
                message=(
                    f"No database connection free within {int(pool.timeout() * 1000)} ms "
                    f"({values['checked_out']} of {values['size'] + values['max_overflow']} in use); "
                    "answering 503 database_busy"
                ),
                alias=self.alias,
                timeout_ms=int(pool.timeout() * 1000),
                exhausted_total=exhausted_total,
                **values,
            )

    def count(self, event_name: str) -> None:
        if event_name == "connect":
            with self._lock:
                self.connections_opened_total += 1
        elif event_name in ("invalidate", "soft_invalidate"):
            with self._lock:
                self.connections_invalidated_total += 1


_monitors: weakref.WeakKeyDictionary[QueuePool, PoolMonitor] = weakref.WeakKeyDictionary()
_monitors_lock = threading.Lock()
_checkout = threading.local()


def pool_values(pool: QueuePool) -> dict[str, int]:
    return {
        "size": pool.size(),
        # SQLAlchemy has no public accessor for the configured overflow.
        "max_overflow": max(0, pool._max_overflow),
        "checked_out": pool.checkedout(),
        "checked_in": pool.checkedin(),
        # overflow() counts up from minus the pool size.
        "overflow": max(0, pool.overflow()),
    }


def _time_checkouts(pool: QueuePool, monitor: PoolMonitor) -> None:
    fetch = pool._do_get

    def timed_do_get() -> Any:
        # QueuePool._do_get calls itself when it loses a race for overflow: time the outer call only.
        if getattr(_checkout, "active", False):
            return fetch()
        _checkout.active = True
        started = time.monotonic()
        try:
            return fetch()
        except PoolTimeoutError:
            monitor.record_exhausted(pool)
            raise
        finally:
            _checkout.active = False
            monitor.record_wait(time.monotonic() - started)

    pool._do_get = timed_do_get


def _event_handler(monitor: PoolMonitor, event_name: str) -> Any:
    counter = metrics.POOL_EVENTS.labels(monitor.alias, event_name)

    def handle(*args: Any) -> None:
        counter.inc()
        monitor.count(event_name)

    return handle


def _listen(pool: QueuePool, monitor: PoolMonitor) -> None:
    for event_name in ("connect", "checkout", "checkin", "invalidate", "soft_invalidate"):
        event.listen(pool, event_name, _event_handler(monitor, event_name))


def roll_back_unless_autocommit(dbapi_connection: Any, record: Any, reset_state: PoolResetState) -> None:
    """The pool's `reset` listener: end the transaction of a connection returned inside one."""
    if reset_state.asyncio_safe and not dbapi_connection.get_autocommit():
        dbapi_connection.rollback()


def _reset_open_transactions_only(pool: QueuePool) -> None:
    pool._reset_on_return = reset_none
    event.listen(pool, "reset", roll_back_unless_autocommit)


def instrument_new_pools(*args: Any) -> None:
    """Class-level `first_connect` listener: instrument each alias's pool before its first connection.

    SQLAlchemy runs `first_connect` once per pool and holds other threads' new
    connections until it returns, so no connection of the pool goes uncounted,
    and none is returned before its reset is set.
    """
    with _monitors_lock:
        for alias, pool in pools():
            if pool not in _monitors:
                monitor = PoolMonitor(alias=alias)
                _time_checkouts(pool, monitor)
                _listen(pool, monitor)
                _reset_open_transactions_only(pool)
                _monitors[pool] = monitor


@dataclass(frozen=True)
class PoolSnapshot:
    alias: str
    size: int
    max_overflow: int
    checked_out: int
    checked_in: int
    overflow: int
    timeout_ms: int
    exhausted_total: int
    last_exhausted_at: datetime | None
    checkout_wait_p50_ms: float | None
    checkout_wait_p99_ms: float | None
    connections_opened_total: int
    connections_invalidated_total: int

    @property
    def capacity(self) -> int:
        return self.size + self.max_overflow

    @property
    def utilization(self) -> float:
        return self.checked_out / self.capacity if self.capacity else 1.0

    @property
    def exhausted(self) -> bool:
        return self.checked_out >= self.capacity


def _percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return round(sorted_values[rank - 1], 3)


def pool_snapshot(alias: str = "default") -> PoolSnapshot | None:
    """The alias's pool now, or None when there is none (SQLite, or no query made yet)."""
    pool = get_pool(alias)
    if pool is None:
        return None
    monitor = _monitors.get(pool) or PoolMonitor(alias=alias)
    waits = sorted(monitor.wait_ms.copy())
    with monitor._lock:
        exhausted_total = monitor.exhausted_total
        last_exhausted_at = monitor.last_exhausted_at
        opened_total = monitor.connections_opened_total
        invalidated_total = monitor.connections_invalidated_total
    return PoolSnapshot(
        alias=alias,
        timeout_ms=int(pool.timeout() * 1000),
        exhausted_total=exhausted_total,
        last_exhausted_at=last_exhausted_at,
        checkout_wait_p50_ms=_percentile(waits, 0.50),
        checkout_wait_p99_ms=_percentile(waits, 0.99),
        connections_opened_total=opened_total,
        connections_invalidated_total=invalidated_total,
        **pool_values(pool),
    )


def pool_gauge_values() -> list[tuple[str, dict[str, int]]]:
    """For the metrics collector: every alias's pool gauges."""
    return [(alias, pool_values(pool)) for alias, pool in pools()]
