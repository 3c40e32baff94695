"""The only module that speaks HTTP to the payment provider.

One module-level `requests.Session` whose adapter retries through urllib3's
`Retry`, POST included: that is safe only because every call for a transaction
carries the same `Idempotency-Key`, so the provider never charges twice. Every
HTTP attempt is timed and returned to the caller, which records it.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import requests
from django.conf import settings
from django.utils import timezone
from requests.adapters import HTTPAdapter
from urllib3 import BaseHTTPResponse
from urllib3 import exceptions as urllib3_exceptions
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError
from urllib3.util.retry import Retry

from core import metrics
from core.events import log_event
from payments.breaker import CircuitBreaker, CircuitOpen

logger = logging.getLogger(__name__)

# 409: an earlier attempt with this key is still being processed; asking again later
# gets its result (the provider replays it), so it is retried like a 503.
RETRY_STATUSES = frozenset({409, 429, 502, 503, 504})
CHARGE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Outcome(enum.StrEnum):
    """What one call (all its HTTP attempts) established. See `payments.outcomes`."""

    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    REJECTED = "rejected"  # 400/422: the provider refused the request itself; nothing charged
    UNKNOWN = "unknown"  # the provider may have charged: the cause is in `code`
    CONNECTION_ERROR = "provider_connection_error"  # nothing was sent
    PROVIDER_ERROR = "provider_error"  # the provider answered that it did not charge (5xx, 429)
    MISCONFIGURED = "provider_misconfigured"  # 401/403/404: our key or URL is wrong
    UNAVAILABLE = "provider_unavailable"  # refused by the open breaker: nothing was sent
    NOT_FOUND = "not_found"  # a lookup only: the provider has no charge with this key


class Cause(enum.StrEnum):
    """What one HTTP attempt saw. Stored in the attempt log and as the error code."""

    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    REJECTED = "rejected"
    TIMEOUT = "provider_timeout"  # sent, no answer within the read timeout
    DROPPED = "connection_dropped"  # the connection broke after the request may have been sent
    IN_FLIGHT = "request_in_flight"  # 409: an earlier attempt with this key is still being processed
    UNUSABLE = "unusable_answer"  # an answer that cannot be trusted (not JSON, bad id, odd status)
    CONNECTION_ERROR = "connection_error"  # refused, DNS, TLS handshake, connect timeout: not sent
    PROVIDER_ERROR = "provider_error"  # 5xx: the provider says it did not process the request
    RATE_LIMITED = "rate_limited"  # 429: not processed
    MISCONFIGURED = "provider_misconfigured"  # 401/403, or 404 on a charge
    NOT_FOUND = "not_found"


# Cause of an attempt -> (the call's outcome if it was the last attempt, may it have charged?)
_CAUSES: dict[Cause, tuple[Outcome, bool]] = {
    Cause.SUCCEEDED: (Outcome.SUCCEEDED, True),
    Cause.DECLINED: (Outcome.DECLINED, True),
    Cause.REJECTED: (Outcome.REJECTED, True),
    Cause.TIMEOUT: (Outcome.UNKNOWN, True),
    Cause.DROPPED: (Outcome.UNKNOWN, True),
    Cause.IN_FLIGHT: (Outcome.UNKNOWN, True),
    Cause.UNUSABLE: (Outcome.UNKNOWN, True),
    Cause.CONNECTION_ERROR: (Outcome.CONNECTION_ERROR, False),
    Cause.PROVIDER_ERROR: (Outcome.PROVIDER_ERROR, True),
    Cause.RATE_LIMITED: (Outcome.PROVIDER_ERROR, True),
    Cause.MISCONFIGURED: (Outcome.MISCONFIGURED, True),
    Cause.NOT_FOUND: (Outcome.NOT_FOUND, True),
}
# Attempts that say the provider is unwell: these, and only these, count towards opening the breaker.
_BREAKER_FAILURES = frozenset(
    {Cause.TIMEOUT, Cause.DROPPED, Cause.UNUSABLE, Cause.CONNECTION_ERROR, Cause.PROVIDER_ERROR}
)
# Definitive answers: nothing later in the same call can make them unknown.
DEFINITIVE = frozenset({Outcome.SUCCEEDED, Outcome.DECLINED, Outcome.REJECTED, Outcome.NOT_FOUND})


@dataclass(frozen=True)
class Attempt:
    started_at: datetime
    duration_ms: int
    http_status: int | None
    outcome: str  # a Cause
    message: str = ""

    @property
    def reached_provider(self) -> bool:
        """False only when the request can not have left this host (the connection never opened)."""
        return _CAUSES[Cause(self.outcome)][1]


@dataclass(frozen=True)
class ProviderResult:
    outcome: Outcome
    attempts: tuple[Attempt, ...] = ()
    charge_id: str = ""
    http_status: int | None = None
    code: str = ""
    message: str = ""
    retry_after_s: int = 0

    @property
    def charged(self) -> bool:
        return self.outcome == Outcome.SUCCEEDED

    @property
    def reached_provider(self) -> bool:
        return any(attempt.reached_provider for attempt in self.attempts)


@dataclass(frozen=True)
class _ClientSettings:
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

    @classmethod
    def from_django(cls) -> _ClientSettings:
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


@dataclass
class _AttemptRecorder:
    deadline: float
    attempts: list[Attempt] = field(default_factory=list)
    _started_wall: datetime | None = None
    _started: float = 0.0

    def start(self) -> None:
        self._started_wall = timezone.now()
        self._started = time.monotonic()

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


def _cause_of_status(http_status: int) -> Cause:
    """The cause an answer's status alone implies (a 2xx body is checked separately)."""
    if 200 <= http_status < 300:
        return Cause.SUCCEEDED
    if http_status == 402:
        return Cause.DECLINED
    if http_status in (400, 422):
        # The provider refused this request (an unknown token, say): sending the same body
        # again cannot succeed, and nothing was charged.
        return Cause.REJECTED
    if http_status in (401, 403):
        return Cause.MISCONFIGURED
    if http_status == 404:
        return Cause.NOT_FOUND
    if http_status == 409:
        return Cause.IN_FLIGHT
    if http_status == 429:
        return Cause.RATE_LIMITED
    if http_status >= 500:
        return Cause.PROVIDER_ERROR
    return Cause.UNUSABLE  # 1xx/3xx: redirects are not followed; nothing says what happened


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


_FIXED_MESSAGES = {
    Cause.TIMEOUT: "no answer within the read timeout",
    Cause.DROPPED: "the connection broke after the request may have been sent",
    Cause.CONNECTION_ERROR: "could not open a connection to the provider; nothing was sent",
}


def describe(cause: Cause, http_status: int | None = None) -> str:
    """A fixed message per cause: no host names, ports, URLs or exception text (those go to the log)."""
    if cause in _FIXED_MESSAGES:
        return _FIXED_MESSAGES[cause]
    return f"HTTP {http_status}" if http_status else cause.value.replace("_", " ")


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
                cause = _cause_of_status(response.status)
                recorder.finish(
                    http_status=response.status, cause=cause, message=describe(cause, response.status)
                )
            elif error is not None:
                cause = _cause_of_error(error)
                recorder.finish(http_status=None, cause=cause, message=describe(cause), error=error)
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
        unknown = [a for a in attempts if _CAUSES[Cause(a.outcome)][0] == Outcome.UNKNOWN]
        if unknown:
            cause = Cause(unknown[0].outcome)
            last = ProviderResult(outcome=Outcome.UNKNOWN, code=cause.value, message=describe(cause))
    return dataclasses.replace(last, attempts=attempts)


class ProviderClient:
    def __init__(self, client_settings: _ClientSettings) -> None:
        self.settings = client_settings
        # A bulkhead: charges this process may have waiting on the provider at once.
        self.call_slots = threading.BoundedSemaphore(client_settings.max_concurrent_calls)
        self.breaker = CircuitBreaker(
            failure_threshold=client_settings.breaker_failures,
            reset_timeout_s=client_settings.breaker_reset_s,
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
        adapter = HTTPAdapter(max_retries=retry, pool_connections=2, pool_maxsize=64)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Proxies (HTTPS_PROXY, NO_PROXY) are read once here rather than on every
        # request: requests scans the whole environment per call otherwise.
        self.session.proxies = requests.utils.get_environ_proxies(client_settings.url)
        self.session.trust_env = False
        self.session.headers.update(
            {"Authorization": f"Bearer {client_settings.api_key}", "User-Agent": "paymentsite/1.0"}
        )

    def _send(self, method: str, url: str, *, provider_key: str, body: dict | None) -> ProviderResult:
        recorder = _AttemptRecorder(deadline=time.monotonic() + self.settings.deadline_s)
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
            )
        except _DeadlineReached:
            pass
        except requests.RequestException as exc:
            error = exc
        finally:
            _local.recorder = None
        if response is not None:
            result = _result_from_response(response)
            recorder.finish(
                http_status=response.status_code,
                cause=_cause_of_answer(result),
                message=result.message,
            )
        elif error is not None:
            cause = _cause_of_error(error)
            recorder.finish(http_status=None, cause=cause, message=describe(cause), error=error)
            result = ProviderResult(outcome=_CAUSES[cause][0], code=cause.value, message=describe(cause))
        else:
            last = recorder.attempts[-1]
            cause = Cause(last.outcome)
            result = ProviderResult(
                outcome=_CAUSES[cause][0],
                http_status=last.http_status,
                code=cause.value,
                message=last.message,
            )
        attempts = tuple(recorder.attempts)
        _observe(kind="charge" if method == "POST" else "lookup", attempts=attempts)
        if result.outcome in DEFINITIVE:
            _misconfigured.clear()  # the provider accepted our key and URL
        return _call_result(result, attempts)

    def _guarded(self, method: str, url: str, *, provider_key: str, body: dict | None) -> ProviderResult:
        try:
            self.breaker.before_call()
        except CircuitOpen as exc:
            return ProviderResult(
                outcome=Outcome.UNAVAILABLE,
                code="circuit_open",
                message="The payment provider is unavailable (circuit open); nothing was sent.",
                retry_after_s=exc.retry_after_s,
            )
        unwell = True  # an exception escaping below must not leave a half-open trial claimed for good
        try:
            result = self._send(method, url, provider_key=provider_key, body=body)
            # A 4xx (a bad request or key, a 409 for a key in flight) says nothing about the
            # provider's health; only timeouts, broken connections, garbage and 5xx count.
            last = Cause(result.attempts[-1].outcome) if result.attempts else None
            unwell = last in _BREAKER_FAILURES
            return result
        finally:
            if unwell:
                self.breaker.record_failure()
            else:
                self.breaker.record_success()

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
        """GET {url}/{key}: the charge made with that key, or NOT_FOUND when none was."""
        return self._guarded(
            "GET", f"{self.settings.url}/{provider_key}", provider_key=provider_key, body=None
        )


def _observe(*, kind: str, attempts: tuple[Attempt, ...]) -> None:
    for attempt in attempts:
        metrics.PROVIDER_REQUEST_SECONDS.labels(kind, attempt.outcome).observe(attempt.duration_ms / 1000)
    if len(attempts) > 1:
        metrics.PROVIDER_RETRIES.labels(kind).inc(len(attempts) - 1)


def _json_object(response: requests.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except (ValueError, RecursionError):  # RecursionError: a deeply nested answer
        return None
    return data if isinstance(data, dict) else None


def _cause_of_answer(result: ProviderResult) -> Cause:
    """The last attempt's cause: a checked answer's code names it, but a decline's is its reason."""
    return Cause.DECLINED if result.outcome == Outcome.DECLINED else Cause(result.code)


def _unusable(http_status: int, why: str) -> ProviderResult:
    return ProviderResult(
        outcome=Outcome.UNKNOWN, http_status=http_status, code=Cause.UNUSABLE.value, message=why
    )


def _result_from_response(response: requests.Response) -> ProviderResult:
    """Validate the answer at the boundary: anything we cannot trust is an unknown outcome."""
    http_status = response.status_code
    cause = _cause_of_status(http_status)
    data = _json_object(response)
    error = data.get("error") if data and isinstance(data.get("error"), dict) else {}
    if cause == Cause.SUCCEEDED:
        if data is None:
            return _unusable(http_status, f"HTTP {http_status} with a body that is not a JSON object")
        charge_id, charge_status = data.get("id"), data.get("status")
        if not isinstance(charge_id, str) or not CHARGE_ID_PATTERN.match(charge_id):
            return _unusable(http_status, f"HTTP {http_status} without a valid charge id")
        if charge_status == "declined":
            return _declined(http_status, error, charge_id=charge_id)
        if charge_status != "succeeded":
            return _unusable(http_status, f"HTTP {http_status} with an unexpected charge status")
        return ProviderResult(
            outcome=Outcome.SUCCEEDED, http_status=http_status, charge_id=charge_id, code=cause.value
        )
    if cause == Cause.DECLINED:
        return _declined(http_status, error, charge_id="")
    if cause == Cause.REJECTED and error.get("type") == "idempotency_error":
        # The provider has this key with another body: the first request may have charged.
        return _unusable(http_status, f"HTTP {http_status}: the provider holds this key with another request")
    message = describe(cause, http_status)
    if cause == Cause.REJECTED:
        provider_code = _safe_code(error.get("code") or error.get("type"))
        message = f"The provider refused the request ({provider_code or f'HTTP {http_status}'})."
    retry_after = response.headers.get("Retry-After", "")
    return ProviderResult(
        outcome=_CAUSES[cause][0],
        http_status=http_status,
        code=cause.value,
        message=message,
        retry_after_s=int(retry_after) if retry_after.isdigit() else 0,
    )


_SAFE_CODE = re.compile(r"^[a-z0-9_]{1,64}$")


def _safe_code(value: object) -> str:
    """A provider's error code, only if it looks like one (it ends up in our API's answers)."""
    return value if isinstance(value, str) and _SAFE_CODE.match(value) else ""


def _declined(http_status: int, error: dict, *, charge_id: str) -> ProviderResult:
    code = _safe_code(error.get("decline_code")) or _safe_code(error.get("code")) or "card_declined"
    return ProviderResult(
        outcome=Outcome.DECLINED,
        http_status=http_status,
        charge_id=charge_id,
        code=code,
        message=f"The card was declined ({code}).",
    )


# The last time the provider refused our credentials or URL (401/403/404 on a charge), until
# an answer proves them right again: /health/ fails meanwhile (an operator must act).
_misconfigured: dict[str, Any] = {}


def note_misconfigured(http_status: int | None) -> None:
    _misconfigured.update(at=timezone.now().isoformat(), http_status=http_status)


def misconfigured() -> dict[str, Any] | None:
    """{"at", "http_status"} of the refusal, or None when the provider accepts us."""
    return dict(_misconfigured) or None


_client: ProviderClient | None = None
_client_lock = threading.Lock()


def get_client() -> ProviderClient:
    """The process's client, rebuilt only when the provider settings change (tests)."""
    global _client
    wanted = _ClientSettings.from_django()
    client = _client
    if client is not None and client.settings == wanted:
        return client
    with _client_lock:
        if _client is None or _client.settings != wanted:
            _client = ProviderClient(wanted)
        return _client
