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
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from payments.breaker import CircuitBreaker, CircuitOpen
from paymentsite import metrics

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    TIMEOUT = "provider_timeout"
    CONNECTION_ERROR = "provider_connection_error"
    PROVIDER_ERROR = "provider_error"
    UNAVAILABLE = "provider_unavailable"
    NOT_FOUND = "not_found"  # a lookup only: the provider never charged with this key


@dataclass(frozen=True)
class Attempt:
    started_at: datetime
    duration_ms: int
    http_status: int | None
    outcome: str
    message: str = ""


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

    def finish(self, *, http_status: int | None, outcome: str, message: str = "") -> None:
        if self._started_wall is None:
            return
        duration_ms = int((time.monotonic() - self._started) * 1000)
        self.attempts.append(Attempt(self._started_wall, duration_ms, http_status, outcome, message[:500]))
        self._started_wall = None

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()


_local = threading.local()


def _outcome_of_status(http_status: int) -> Outcome:
    if http_status < 300:
        return Outcome.SUCCEEDED
    if http_status in (400, 402, 422):
        # 400/422: the provider refused this request (an unknown token, say). Sending
        # the same body again cannot succeed, so it is as final as a decline.
        return Outcome.DECLINED
    if http_status == 404:
        return Outcome.NOT_FOUND
    return Outcome.PROVIDER_ERROR


def _outcome_of_error(error: BaseException) -> Outcome:
    # A connect timeout means nothing was sent; a read timeout means the
    # provider may have charged and we do not know: the dangerous case.
    if isinstance(error, ConnectTimeoutError | NewConnectionError | requests.ConnectTimeout):
        return Outcome.CONNECTION_ERROR
    if isinstance(error, ReadTimeoutError | requests.ReadTimeout):
        return Outcome.TIMEOUT
    reason = getattr(error, "reason", None) or (error.args[0] if getattr(error, "args", None) else None)
    if isinstance(reason, BaseException) and reason is not error:
        return _outcome_of_error(reason)
    if isinstance(error, requests.ConnectionError):
        return Outcome.CONNECTION_ERROR
    return Outcome.PROVIDER_ERROR


def _describe_error(error: BaseException, read_timeout_s: float) -> str:
    outcome = _outcome_of_error(error)
    if outcome == Outcome.TIMEOUT:
        return f"timeout after {int(read_timeout_s * 1000)} ms"
    return f"{type(error).__name__}: {error}"


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
                recorder.finish(
                    http_status=response.status,
                    outcome=_outcome_of_status(response.status),
                    message=f"HTTP {response.status}",
                )
            elif error is not None:
                recorder.finish(
                    http_status=None,
                    outcome=_outcome_of_error(error),
                    message=_describe_error(error, getattr(_local, "read_timeout_s", 0.0)),
                )
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
        _local.read_timeout_s = self.settings.read_timeout_s
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
            recorder.finish(http_status=response.status_code, outcome=result.outcome, message=result.message)
        elif error is not None:
            recorder.finish(
                http_status=None,
                outcome=_outcome_of_error(error),
                message=_describe_error(error, self.settings.read_timeout_s),
            )
            result = ProviderResult(outcome=_outcome_of_error(error), message=str(error)[:500])
        else:
            last = recorder.attempts[-1]
            result = ProviderResult(
                outcome=Outcome(last.outcome), http_status=last.http_status, message=last.message
            )
        attempts = tuple(recorder.attempts)
        _observe(kind="charge" if method == "POST" else "lookup", attempts=attempts)
        if result.outcome in _FAILURES and any(a.outcome == Outcome.TIMEOUT for a in attempts):
            # One timed-out attempt is enough for the outcome to be unknown.
            result = ProviderResult(outcome=Outcome.TIMEOUT, message=_timeout_message(attempts))
        return dataclasses.replace(result, attempts=attempts)

    def _guarded(self, method: str, url: str, *, provider_key: str, body: dict | None) -> ProviderResult:
        try:
            self.breaker.before_call()
        except CircuitOpen as exc:
            return ProviderResult(
                outcome=Outcome.UNAVAILABLE,
                message="The payment provider is unavailable (circuit open).",
                retry_after_s=exc.retry_after_s,
            )
        result = self._send(method, url, provider_key=provider_key, body=body)
        # A 4xx (a bad request or key, a 409 for a key in flight) says nothing about
        # the provider's health; only timeouts, connection errors and 5xx count.
        if result.outcome in _FAILURES and (result.http_status is None or result.http_status >= 500):
            self.breaker.record_failure()
        else:
            self.breaker.record_success()
        return result

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


_FAILURES = frozenset({Outcome.TIMEOUT, Outcome.CONNECTION_ERROR, Outcome.PROVIDER_ERROR})


def _timeout_message(attempts: tuple[Attempt, ...]) -> str:
    timeouts = [a for a in attempts if a.outcome == Outcome.TIMEOUT]
    return f"{timeouts[-1].message} ({len(attempts)} attempts)" if timeouts else "timeout"


def _json_object(response: requests.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _result_from_response(response: requests.Response) -> ProviderResult:
    http_status = response.status_code
    outcome = _outcome_of_status(http_status)
    data = _json_object(response)
    if outcome == Outcome.SUCCEEDED:
        charge_id = data.get("id") if data else None
        charge_status = data.get("status") if data else None
        if not isinstance(charge_id, str) or not charge_id:
            return ProviderResult(
                outcome=Outcome.PROVIDER_ERROR,
                http_status=http_status,
                message="provider answered without a charge id",
            )
        if charge_status == "declined":
            error = data.get("error") if isinstance(data.get("error"), dict) else {}
            return _declined(http_status, error, charge_id=charge_id)
        if charge_status != "succeeded":
            return ProviderResult(
                outcome=Outcome.PROVIDER_ERROR,
                http_status=http_status,
                message=f"provider answered with unexpected status {str(charge_status)[:40]!r}",
            )
        return ProviderResult(outcome=Outcome.SUCCEEDED, http_status=http_status, charge_id=charge_id)
    error = data.get("error") if data and isinstance(data.get("error"), dict) else {}
    if outcome == Outcome.DECLINED:
        return _declined(http_status, error, charge_id="")
    code = str(error.get("code") or error.get("type") or "")[:64]
    message = str(error.get("message") or f"provider answered HTTP {http_status}")[:500]
    return ProviderResult(outcome=outcome, http_status=http_status, code=code, message=message)


def _declined(http_status: int, error: dict, *, charge_id: str) -> ProviderResult:
    return ProviderResult(
        outcome=Outcome.DECLINED,
        http_status=http_status,
        charge_id=charge_id if isinstance(charge_id, str) else "",
        code=str(error.get("decline_code") or error.get("code") or error.get("type") or "card_declined")[:64],
        message=str(error.get("message") or "The card was declined.")[:500],
    )


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
