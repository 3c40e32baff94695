"""The HTTP adapter: the only module that speaks HTTP to the payment provider.

One `requests.Session` per client whose adapter retries through urllib3's `Retry`, POST
included: that is safe only because every call for a transaction carries the same
`Idempotency-Key`, so the provider never charges twice. The retry policy and the timeouts
live here, in one transport class; every HTTP attempt is timed and returned to the caller,
which records it. The breaker and the bulkhead are the client's `resilience`.

Every attempt has a hard wall-clock bound, `attempt_deadline_s()` (connect + read timeout):
`payments.provider.deadline` shuts its socket down at that moment whatever the peer sends, so a
trickled answer cannot keep an attempt open, and an attempt cut there is a timeout (unknown: the
request was sent). No attempt starts after the call's deadline, so no request of a call is open
after `call_deadline_s()` from its start. Redirects are never followed.
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
from django.conf import settings
from django.utils import timezone
from urllib3 import BaseHTTPResponse
from urllib3 import exceptions as urllib3_exceptions
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError
from urllib3.util.retry import Retry

from core import metrics
from core.events import log_event
from payments.provider import deadline, misconfiguration
from payments.provider.answers import CHARGE, LOOKUP, cause_of_answer, cause_of_status, result_from_response
from payments.provider.interface import (
    BREAKER_FAILURES,
    CAUSES,
    DEFINITIVE,
    Attempt,
    Cause,
    Outcome,
    ProviderResult,
    describe,
)
from payments.provider.resilience import CircuitBreaker, CircuitOpen, Resilience

logger = logging.getLogger("payments.provider")  # the name it had before the move

# 409: an earlier attempt with this key is still being processed; asking again later
# gets its result (the provider replays it), so it is retried like a 503.
RETRY_STATUSES = frozenset({409, 429, 502, 503, 504})


@dataclass(frozen=True)
class HttpSettings:
    url: str
    api_key: str
    connect_timeout_s: float
    read_timeout_s: float
    max_retries: int
    backoff_s: float
    deadline_s: float
    breaker_failures: int
    breaker_reset_s: int
    max_concurrent_calls: int

    @property
    def attempt_deadline_s(self) -> float:
        """The hard bound on one HTTP attempt: connect, send, and the whole answer."""
        return self.connect_timeout_s + self.read_timeout_s

    @classmethod
    def from_django(cls) -> HttpSettings:
        return cls(
            url=settings.PAYMENT_SERVICE_URL.rstrip("/"),
            api_key=settings.PAYMENT_API_KEY,
            connect_timeout_s=settings.PAYMENT_CONNECT_TIMEOUT_MS / 1000,
            read_timeout_s=settings.PAYMENT_TIMEOUT_MS / 1000,
            max_retries=settings.PAYMENT_MAX_RETRIES,
            backoff_s=settings.PAYMENT_BACKOFF_MS / 1000,
            deadline_s=settings.PAYMENT_DEADLINE_MS / 1000,
            breaker_failures=settings.PAYMENT_BREAKER_FAILURES,
            breaker_reset_s=settings.PAYMENT_BREAKER_RESET_S,
            max_concurrent_calls=settings.PAYMENT_MAX_CONCURRENT_CALLS,
        )


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


class HttpProvider:
    """The provider over HTTPS, as the contract in README ("The provider contract") describes."""

    Settings = HttpSettings

    def __init__(self, client_settings: HttpSettings) -> None:
        self.settings = client_settings
        self.resilience = Resilience(
            failure_threshold=client_settings.breaker_failures,
            reset_timeout_s=client_settings.breaker_reset_s,
            max_concurrent_calls=client_settings.max_concurrent_calls,
        )
        retry = _RecordingRetry(
            total=client_settings.max_retries,
            connect=client_settings.max_retries,
            read=client_settings.max_retries,
            status=client_settings.max_retries,
            other=0,
            redirect=0,
            allowed_methods=frozenset({"GET", "POST"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=client_settings.backoff_s,
            backoff_jitter=client_settings.backoff_s,
            backoff_max=max(client_settings.deadline_s, 1.0),
            respect_retry_after_header=True,
            raise_on_status=False,
            raise_on_redirect=False,
        )
        self.session = requests.Session()
        # Enough sockets for every request thread, so none is thrown away under load.
        adapter = deadline.BoundedHTTPAdapter(max_retries=retry, pool_connections=2, pool_maxsize=64)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Proxies (HTTPS_PROXY, NO_PROXY) are read once here rather than on every
        # request: requests scans the whole environment per call otherwise.
        self.session.proxies = requests.utils.get_environ_proxies(client_settings.url)
        self.session.trust_env = False
        self.session.headers.update(
            {"Authorization": f"Bearer {client_settings.api_key}", "User-Agent": "paymentsite/1.0"}
        )

    def attempt_deadline_s(self) -> float:
        """The hard wall-clock bound on one HTTP attempt (connect + read timeout): its socket is
        shut down then, whatever the peer sends."""
        return self.settings.attempt_deadline_s

    def call_deadline_s(self) -> float:
        """The longest one call (`charge` or `lookup`, all its attempts) can keep a request open:
        no attempt starts after the call's deadline, and each is cut at its own bound."""
        return self.settings.deadline_s + self.settings.attempt_deadline_s

    def _send(self, method: str, url: str, *, provider_key: str, body: dict | None) -> ProviderResult:
        recorder = _AttemptRecorder(
            deadline=time.monotonic() + self.settings.deadline_s,
            attempt_bound_s=self.settings.attempt_deadline_s,
        )
        _local.recorder = recorder
        recorder.start()
        response: requests.Response | None = None
        error: BaseException | None = None
        try:
            response = self.session.request(
                method,
                url,
                json=body,
                headers={"Idempotency-Key": provider_key},
                timeout=(self.settings.connect_timeout_s, self.settings.read_timeout_s),
                allow_redirects=False,  # a redirect is no answer from the provider (unknown)
            )
        except _DeadlineReached:
            pass
        except requests.RequestException as exc:
            error = exc
        finally:
            _local.recorder = None
            cut = recorder.cut
            deadline.finish_attempt()
        if response is not None and cut:
            # The answer was cut short at the deadline (a body read to a shut-down socket can look
            # complete): whatever it says, the request was sent and may have charged.
            recorder.finish(http_status=response.status_code, cause=Cause.TIMEOUT, message=CUT_AT_DEADLINE)
            result = ProviderResult(
                outcome=Outcome.UNKNOWN, code=Cause.TIMEOUT.value, message=CUT_AT_DEADLINE
            )
        elif response is not None:
            result = result_from_response(response, kind=CHARGE if method == "POST" else LOOKUP)
            recorder.finish(
                http_status=response.status_code,
                cause=cause_of_answer(result),
                message=result.message,
            )
        elif error is not None:
            cause, message = recorder.error_cause(error)
            recorder.finish(http_status=None, cause=cause, message=message, error=error)
            result = ProviderResult(outcome=CAUSES[cause][0], code=cause.value, message=message)
        else:
            last = recorder.attempts[-1]
            cause = Cause(last.outcome)
            result = ProviderResult(
                outcome=CAUSES[cause][0],
                http_status=last.http_status,
                code=cause.value,
                message=last.message,
            )
        attempts = tuple(recorder.attempts)
        _observe(kind="charge" if method == "POST" else "lookup", attempts=attempts)
        if result.outcome in DEFINITIVE:
            misconfiguration.clear()  # the provider accepted our key and URL
        return _call_result(result, attempts)

    @property
    def breaker(self) -> CircuitBreaker:
        """The resilience object's breaker, for operators' views and tests."""
        return self.resilience.breaker

    def _guarded(self, method: str, url: str, *, provider_key: str, body: dict | None) -> ProviderResult:
        try:
            return self.resilience.guard(
                lambda: self._send(method, url, provider_key=provider_key, body=body), unwell=_unwell
            )
        except CircuitOpen as exc:
            return ProviderResult(
                outcome=Outcome.UNAVAILABLE,
                code="circuit_open",
                message="The payment provider is unavailable (circuit open); nothing was sent.",
                retry_after_s=exc.retry_after_s,
            )

    def charge(
        self, *, provider_key: str, amount: int, currency: str, source: str, reference: str, description: str
    ) -> ProviderResult:
        body = {
            "amount": amount,
            "currency": currency,
            "source": source,
            "reference": reference,
            "description": description,
        }
        return self._guarded("POST", self.settings.url, provider_key=provider_key, body=body)

    def lookup(self, *, provider_key: str) -> ProviderResult:
        """GET {url}/{key}: the charge made with that key, or NOT_FOUND only on the provider's
        typed 404 `resource_missing` (any other 404, HTML or redirect is UNKNOWN)."""
        return self._guarded(
            "GET", f"{self.settings.url}/{provider_key}", provider_key=provider_key, body=None
        )


def _unwell(result: ProviderResult) -> bool:
    """A 4xx (a bad request or key, a 409 for a key in flight) says nothing about the provider's
    health; only timeouts, broken connections, garbage and 5xx count towards opening the breaker."""
    last = Cause(result.attempts[-1].outcome) if result.attempts else None
    return last in BREAKER_FAILURES


def _observe(*, kind: str, attempts: tuple[Attempt, ...]) -> None:
    for attempt in attempts:
        metrics.PROVIDER_REQUEST_SECONDS.labels(kind, attempt.outcome).observe(attempt.duration_ms / 1000)
    if len(attempts) > 1:
        metrics.PROVIDER_RETRIES.labels(kind).inc(len(attempts) - 1)
