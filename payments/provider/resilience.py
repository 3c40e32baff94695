"""The breaker and the bulkhead in front of a provider, as one object: `Resilience`.

The circuit breaker is written by hand because pybreaker's `CircuitBreaker.call` holds one lock for
the whole guarded call: every charge in a process would wait for the one
before it. Here the lock guards only the few fields below, never a network call.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from core.events import log_event

logger = logging.getLogger("payments.provider.resilience")  # the name it had before the move

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class BreakerSnapshot:
    state: str
    consecutive_failures: int
    failure_threshold: int
    reset_timeout_s: float
    retry_after_s: int
    opened_total: int


class CircuitOpen(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"circuit open, retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class ProviderBusy(Exception):
    """The bulkhead is full: this process already has its limit of calls waiting on the provider."""


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int,
        reset_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._opened_total = 0

    def _retry_after_s(self) -> int:
        remaining = self._opened_at + self.reset_timeout_s - self._clock()
        return max(1, int(remaining + 0.999))

    def _open_elapsed(self) -> bool:
        return self._clock() >= self._opened_at + self.reset_timeout_s

    def check(self) -> None:
        """Raise CircuitOpen when a call would be refused now; claims nothing."""
        with self._lock:
            if self._state == OPEN and not self._open_elapsed():
                raise CircuitOpen(self._retry_after_s())
            if self._state == HALF_OPEN and self._trial_in_flight:
                raise CircuitOpen(1)

    def before_call(self) -> None:
        """Claim the right to call: always when closed, once (the trial) when half-open."""
        with self._lock:
            if self._state == CLOSED:
                return
            if self._state == OPEN:
                if not self._open_elapsed():
                    raise CircuitOpen(self._retry_after_s())
                self._state = HALF_OPEN
                self._trial_in_flight = False
            if self._trial_in_flight:
                raise CircuitOpen(1)
            self._trial_in_flight = True

    def record_success(self) -> None:
        with self._lock:
            was_closed = self._state == CLOSED
            self._state = CLOSED
            self._failures = 0
            self._trial_in_flight = False
        if not was_closed:
            log_event(logger, "breaker.closed", message="Provider answered again; circuit closed")

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            trial_failed = self._state == HALF_OPEN
            opens = trial_failed or (self._state == CLOSED and self._failures >= self.failure_threshold)
            if opens:
                self._state = OPEN
                self._opened_at = self._clock()
                self._trial_in_flight = False
                self._opened_total += 1
            failures = self._failures
        if opens:
            log_event(
                logger,
                "breaker.opened",
                level=logging.WARNING,
                message=f"Circuit opened after {failures} consecutive provider failures",
                consecutive_failures=failures,
                reset_timeout_s=self.reset_timeout_s,
            )

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            state = self._state
            if state == OPEN and self._open_elapsed():
                state = HALF_OPEN  # the next call will be let through as the trial
            return BreakerSnapshot(
                state=state,
                consecutive_failures=self._failures,
                failure_threshold=self.failure_threshold,
                reset_timeout_s=self.reset_timeout_s,
                retry_after_s=self._retry_after_s() if state == OPEN else 0,
                opened_total=self._opened_total,
            )

    def reset(self) -> None:
        with self._lock:
            self._state = CLOSED
            self._failures = 0
            self._trial_in_flight = False


class Resilience:
    """What stands between the services and one provider: the breaker and a bulkhead.

    The services use it only through `admit` and `call_slot`; the adapter wraps each
    network call in `guard`. A hanging provider must not take every thread, or /health/
    and the admin stop answering: the bulkhead caps the calls one process has waiting.
    """

    def __init__(
        self,
        *,
        failure_threshold: int,
        reset_timeout_s: float,
        max_concurrent_calls: int,
        max_slot_waiters: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`max_slot_waiters`: how many calls may wait for a slot at once (None: any number).
        Under a hanging provider every slot stays taken, and each waiter holds a thread for its
        whole wait: uncapped, the waiters take the threads kept for /health/ and the admin."""
        self.breaker = CircuitBreaker(
            failure_threshold=failure_threshold, reset_timeout_s=reset_timeout_s, clock=clock
        )
        self._slots = threading.BoundedSemaphore(max_concurrent_calls)
        self._waiters = None if max_slot_waiters is None else threading.BoundedSemaphore(max_slot_waiters)

    def admit(self) -> None:
        """Raise CircuitOpen when a call would be refused now; claims nothing."""
        self.breaker.check()

    @contextlib.contextmanager
    def call_slot(
        self, *, wait_s: float = 0.0, before_waiting: Callable[[], None] | None = None
    ) -> Iterator[None]:
        """Hold one of the bulkhead's slots. CircuitOpen at once; with every slot taken, wait up
        to `wait_s` for one (calling `before_waiting` first: the caller gives back what it must
        not hold while it waits, its database connection), then ProviderBusy, holding nothing.
        With `max_slot_waiters` already waiting, ProviderBusy at once."""
        self.admit()
        if not self._slots.acquire(blocking=False):
            if wait_s <= 0 or (self._waiters is not None and not self._waiters.acquire(blocking=False)):
                raise ProviderBusy()
            try:
                if before_waiting is not None:
                    before_waiting()
                got_slot = self._slots.acquire(timeout=wait_s)
            finally:
                if self._waiters is not None:
                    self._waiters.release()
            if not got_slot:
                raise ProviderBusy()
            try:
                self.admit()  # the breaker may have opened while this call waited
            except CircuitOpen:
                self._slots.release()
                raise
        try:
            yield
        finally:
            self._slots.release()

    def guard(self, call: Callable[[], T], *, unwell: Callable[[T], bool]) -> T:
        """Run one network call through the breaker (CircuitOpen when it refuses), counting
        the result as a failure when `unwell` says so, or when the call raises."""
        self.breaker.before_call()
        failed = True  # an exception escaping below must not leave a half-open trial claimed for good
        try:
            result = call()
            failed = unwell(result)
            return result
        finally:
            if failed:
                self.breaker.record_failure()
            else:
                self.breaker.record_success()

    def state(self) -> str:
        return self.breaker.snapshot().state
