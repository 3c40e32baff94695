"""Each HTTP attempt of one provider call: timed, classified, and kept to the call's deadline.

`_RecordingRetry` is urllib3's `Retry` that records every attempt it makes (the adapter in
`payments.provider.http` mounts it); `_AttemptRecorder` holds one call's attempts and each
attempt's hard bound (`payments.provider.deadline`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Self

import requests
from django.utils import timezone
from urllib3 import BaseHTTPResponse
from urllib3 import exceptions as urllib3_exceptions
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError
from urllib3.util.retry import Retry

from core.events import log_event
from payments.provider import deadline
from payments.provider.answers import cause_of_status, parse_retry_after
from payments.provider.interface import CAUSES, DEFINITIVE, Attempt, Cause, Outcome, ProviderResult, describe

logger = logging.getLogger("payments.provider")  # the adapter's logger: its events keep their name


class _DeadlineReached(Exception):
    """No further attempt may start: the overall deadline would be passed."""


# An attempt whose socket was shut down at its deadline (payments.provider.deadline).
CUT_AT_DEADLINE = "no complete answer within the attempt's deadline; the connection was closed"


@dataclass
class _AttemptRecorder:
    deadline: float
    attempt_bound_s: float
    attempts: list[Attempt] = field(default_factory=list)
    _started_wall: datetime | None = None
    _started: float = 0.0
    _watch: deadline.AttemptWatch | None = None

    def start(self) -> None:
        self._started_wall = timezone.now()
        self._started = time.monotonic()
        self._watch = deadline.start_attempt(self.attempt_bound_s)

    @property
    def cut(self) -> bool:
        """Whether the current attempt's connection was shut down at its deadline."""
        return self._watch is not None and self._watch.cut

    def error_cause(self, error: BaseException) -> tuple[Cause, str]:
        if self.cut:
            return Cause.TIMEOUT, CUT_AT_DEADLINE
        cause = _cause_of_error(error)
        return cause, describe(cause)

    @property
    def in_attempt(self) -> bool:
        return self._started_wall is not None

    def finish(
        self, *, http_status: int | None, cause: Cause, message: str, error: BaseException | None = None
    ) -> None:
        if self._started_wall is None:
            return
        duration_ms = int((time.monotonic() - self._started) * 1000)
        self.attempts.append(
            Attempt(self._started_wall, duration_ms, http_status, cause.value, message[:500])
        )
        self._started_wall = None
        if error is not None:
            # The exception's text (host, port, errno) is for operators only: never stored or shown.
            log_event(
                logger,
                "provider.attempt_failed",
                message=f"Provider attempt failed: {cause.value} ({type(error).__name__}: {error})",
                cause=cause.value,
                duration_ms=duration_ms,
            )

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()


_local = threading.local()


def _cause_of_error(error: BaseException) -> Cause:
    """Whether a failed attempt can have reached the provider.

    Only a connection that never opened (refused, DNS, connect timeout, TLS handshake) proves
    that nothing was sent. A read timeout, or a connection that broke after it opened, may
    have delivered the request: the provider may have charged, and we do not know.
    """
    if isinstance(error, ConnectTimeoutError | requests.ConnectTimeout | urllib3_exceptions.SSLError):
        return Cause.CONNECTION_ERROR  # NewConnectionError is a ConnectTimeoutError
    if isinstance(error, requests.exceptions.SSLError):
        return Cause.CONNECTION_ERROR
    if isinstance(error, ReadTimeoutError | requests.ReadTimeout):
        return Cause.TIMEOUT
    reason = getattr(error, "reason", None) or (error.args[0] if getattr(error, "args", None) else None)
    if isinstance(reason, BaseException) and reason is not error:
        return _cause_of_error(reason)
    return Cause.DROPPED


class _RecordingRetry(Retry):
    """urllib3's Retry that also times each attempt and keeps to the call's deadline."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        recorder: _AttemptRecorder | None = getattr(_local, "recorder", None)
        if recorder is not None:
            if response is not None:
                cause = cause_of_status(response.status)
                recorder.finish(
                    http_status=response.status, cause=cause, message=describe(cause, response.status)
                )
            elif error is not None:
                cause, message = recorder.error_cause(error)
                recorder.finish(http_status=None, cause=cause, message=message, error=error)
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def parse_retry_after(self, retry_after: str) -> float:
        """urllib3's raises InvalidHeader on junk ("²", say); junk here means "use the backoff"."""
        return float(parse_retry_after(retry_after) or 0)

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        recorder: _AttemptRecorder | None = getattr(_local, "recorder", None)
        if recorder is not None:
            retry_after = (
                self.get_retry_after(response) if self.respect_retry_after_header and response else None
            )
            wait_s = retry_after if retry_after else self.get_backoff_time()
            if recorder.remaining_s() <= wait_s:
                raise _DeadlineReached()
        super().sleep(response)
        if recorder is not None:
            recorder.start()


def _call_result(last: ProviderResult, attempts: tuple[Attempt, ...]) -> ProviderResult:
    """The call's result: the last attempt's, unless an earlier attempt may have charged.

    Unknown is sticky within a call: after a timeout or a dropped connection, a later 5xx,
    409 or refused connection proves nothing about the first attempt.
    """
    if last.outcome not in DEFINITIVE and last.outcome != Outcome.UNKNOWN:
        unknown = [a for a in attempts if CAUSES[Cause(a.outcome)][0] == Outcome.UNKNOWN]
        if unknown:
            cause = Cause(unknown[0].outcome)
            last = ProviderResult(outcome=Outcome.UNKNOWN, code=cause.value, message=describe(cause))
    return dataclasses.replace(last, attempts=attempts)
