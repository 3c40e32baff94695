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

import logging
import time
from dataclasses import dataclass
from urllib.parse import quote

import requests
from django.conf import settings

from core import metrics
from payments.provider import deadline, misconfiguration
from payments.provider.answers import (
    CHARGE,
    LOOKUP,
    REFUND,
    REFUND_LOOKUP,
    Asked,
    cause_of_answer,
    result_from_response,
)
from payments.provider.attempts import (
    CUT_AT_DEADLINE,
    _AttemptRecorder,
    _call_result,
    _DeadlineReached,
    _local,
    _RecordingRetry,
)
from payments.provider.interface import (
    BREAKER_FAILURES,
    CAUSES,
    DEFINITIVE,
    Attempt,
    Cause,
    Outcome,
    ProviderResult,
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
    max_slot_waiters: int | None = None

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
            max_slot_waiters=settings.PAYMENT_SLOT_WAITERS,
        )


class HttpProvider:
    """The provider over HTTPS, as docs/provider.md (the provider contract) describes."""

    Settings = HttpSettings

    def __init__(self, client_settings: HttpSettings) -> None:
        self.settings = client_settings
        self.resilience = Resilience(
            failure_threshold=client_settings.breaker_failures,
            reset_timeout_s=client_settings.breaker_reset_s,
            max_concurrent_calls=client_settings.max_concurrent_calls,
            max_slot_waiters=client_settings.max_slot_waiters,
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

    def _send(self, method: str, url: str, *, asked: Asked, body: dict | None) -> ProviderResult:
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
                headers={"Idempotency-Key": asked.provider_key},
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
            result = result_from_response(response, asked)
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
        _observe(kind=asked.kind, attempts=attempts)
        if result.outcome in DEFINITIVE:
            misconfiguration.clear()  # the provider accepted our key and URL
        return _call_result(result, attempts)

    @property
    def breaker(self) -> CircuitBreaker:
        """The resilience object's breaker, for operators' views and tests."""
        return self.resilience.breaker

    def _guarded(self, method: str, url: str, *, asked: Asked, body: dict | None) -> ProviderResult:
        try:
            return self.resilience.guard(
                lambda: self._send(method, url, asked=asked, body=body), unwell=_unwell
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
        asked = Asked(CHARGE, provider_key, amount=amount, currency=currency, reference=reference)
        return self._guarded("POST", self.settings.url, asked=asked, body=body)

    def lookup(
        self,
        *,
        provider_key: str,
        amount: int | None = None,
        currency: str | None = None,
        reference: str | None = None,
    ) -> ProviderResult:
        """GET {url}/{key}: the charge made with that key, or NOT_FOUND only on the provider's
        typed 404 `resource_missing` (any other 404, HTML or redirect is UNKNOWN). The charge
        found is checked against the amount, currency and reference given (`mismatch`); one
        for another key or reference says nothing about ours and is UNKNOWN."""
        return self._guarded(
            "GET",
            f"{self.settings.url}/{provider_key}",
            asked=Asked(LOOKUP, provider_key, amount=amount, currency=currency, reference=reference),
            body=None,
        )

    def _refunds_url(self, charge_key: str) -> str:
        return f"{self.settings.url}/{quote(charge_key, safe='')}/refunds"

    def refund(self, *, charge_key: str, refund_key: str, amount: int, charge_id: str = "") -> ProviderResult:
        """POST {url}/{charge_key}/refunds with the refund's own Idempotency-Key: SUCCEEDED,
        DECLINED (failed) or PENDING from the refund answered; NOT_FOUND only on the typed 404
        `resource_missing` (no such charge: nothing refunded); the rest as a charge's answers,
        with the same retries, deadlines, breaker and bulkhead."""
        return self._guarded(
            "POST",
            self._refunds_url(charge_key),
            asked=Asked(REFUND, refund_key, amount=amount, charge_id=charge_id),
            body={"amount": amount},
        )

    def refund_lookup(
        self, *, charge_key: str, refund_key: str, amount: int | None = None, charge_id: str = ""
    ) -> ProviderResult:
        """GET {url}/{charge_key}/refunds/{refund_key}: the refund made with that key, or
        NOT_FOUND only on the typed 404 `resource_missing`. A refund for another charge than a
        non-empty `charge_id` is UNKNOWN (with `mismatch`); another amount keeps its outcome."""
        return self._guarded(
            "GET",
            f"{self._refunds_url(charge_key)}/{quote(refund_key, safe='')}",
            asked=Asked(REFUND_LOOKUP, refund_key, amount=amount, charge_id=charge_id),
            body=None,
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
