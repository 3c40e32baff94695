"""A fake payment provider: a real HTTP server on loopback that speaks the provider contract.

    python -m payments.fake_provider --port 8099

Stdlib only, so it runs without Django or the project's dependencies. It is hand-written rather
than built on a mock-server library because it must act on the wire: hold an answer past a read
timeout, or close the TCP connection after acting on a request without answering it.

The contract: `POST /v1/charges` (Bearer key, `Idempotency-Key`, JSON `{amount, currency,
source, reference, description}`) answers 200 with the charge, 402 with a decline, 400/401 for a
bad request or key, 409 while the same key is still being processed, 429 or 5xx; the same key
with the same body answers the first final result and never charges again.
`GET /v1/charges/{key}` answers the charge made with that key, or 404 if none is made *yet*.

Behaviour is chosen by the charge's `source` token, like a card network's test cards:
`tok_visa` succeeds; `tok_chargeDeclined`, `tok_insufficientFunds` decline; `tok_timeout`
charges at once but holds every answer for that key for `--timeout-window-s`; `tok_flaky`
answers 503 twice per key; `tok_rateLimited` answers 429 once; `tok_error` always 500.

Faults are queued from Python (`inject`, `inject_many`, `clear_faults`) or over HTTP, and each
applies once, first in first out, to the next request that matches it: `"on"` is "charge"
(default) or "lookup", and `"key"`, if given, limits it to that idempotency key.

    {"kind": "hold", "ms": 500}          act normally, then wait before answering
    {"kind": "slow", "ms": 500}          key in progress while waiting, then charge and answer
    {"kind": "drop_after"}               act normally, then close the connection unanswered
    {"kind": "drop_before"}              close the connection unanswered, acting on nothing
    {"kind": "status", "status": 503, "retry_after": 1}   that error status, acting on nothing
    {"kind": "garbage", "variant": "long_id"}   act normally, then answer 200 with an unusable
        body: not_json, long_id (300 characters), bad_id, bad_status, missing_id,
        deep_json (50 000 nested lists), not_object (a JSON list)

Lookups take `status`, `drop_before`, `hold` and `garbage`. Control endpoints (no key needed):
`GET /_fake/charges` (charges per key), `GET /_fake/ledger` (each charge made, per key),
`GET|POST|DELETE /_fake/faults` (pending and applied faults; queue `{"faults": [...]}`; clear),
`POST /_fake/faults/clear`, and `POST /_fake/reset`, which forgets charges and faults.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import secrets
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

CHARGES_PATH = "/v1/charges"
HEALTH_PATH = "/health"
FAKE_CHARGES_PATH = "/_fake/charges"
FAKE_RESET_PATH = "/_fake/reset"
FAKE_LEDGER_PATH = "/_fake/ledger"
FAKE_FAULTS_PATH = "/_fake/faults"
FAKE_FAULTS_CLEAR_PATH = "/_fake/faults/clear"

MAX_BODY_BYTES = 1_000_000
MAX_IDEMPOTENCY_KEY_LENGTH = 255
FLAKY_FAILURES_PER_KEY = 2
RATE_LIMITED_FAILURES_PER_KEY = 1
RATE_LIMIT_RETRY_AFTER_S = 1
FINAL_STATUSES = frozenset({200, 402})

CHARGE_FIELDS = frozenset({"amount", "currency", "source", "reference", "description"})
DECLINES: dict[str, tuple[str, str]] = {
    "tok_chargeDeclined": ("generic_decline", "Your card was declined."),
    "tok_insufficientFunds": ("insufficient_funds", "Your card has insufficient funds."),
}

FAULT_KINDS_BY_TARGET: dict[str, frozenset[str]] = {
    "charge": frozenset({"hold", "slow", "drop_after", "drop_before", "status", "garbage"}),
    "lookup": frozenset({"hold", "drop_before", "status", "garbage"}),
}
# kind: (required parameters, optional parameters)
FAULT_PARAMETERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "hold": (frozenset({"ms"}), frozenset()),
    "slow": (frozenset({"ms"}), frozenset()),
    "drop_after": (frozenset(), frozenset()),
    "drop_before": (frozenset(), frozenset()),
    "status": (frozenset({"status"}), frozenset({"retry_after"})),
    "garbage": (frozenset({"variant"}), frozenset()),
}
FAULT_PARAMETER_NAMES = ("ms", "status", "retry_after", "variant")
FAULT_FIELDS = frozenset({"kind", "on", "key", *FAULT_PARAMETER_NAMES})
GARBAGE_VARIANTS = frozenset(
    {"not_json", "long_id", "bad_id", "bad_status", "missing_id", "deep_json", "not_object"}
)
LONG_ID_LENGTH = 300
DEEP_JSON_DEPTH = 50_000

JsonObject = dict[str, Any]
# (kind, on, idempotency key of the request it applied to)
AppliedFault = tuple[str, str, str | None]

# Error bodies by status: (type, code, message). Injected statuses use these too.
STATUS_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "invalid_request", "The request was invalid."),
    404: ("invalid_request_error", "resource_missing", "No charge was made with this idempotency key."),
    409: (
        "idempotency_error",
        "request_in_progress",
        "A request with this idempotency key is still being processed.",
    ),
    429: ("rate_limit_error", "rate_limited", "Too many requests."),
    500: ("api_error", "internal_error", "An internal error occurred."),
    502: ("api_error", "bad_gateway", "The upstream gateway failed."),
    503: ("api_error", "service_unavailable", "The service is temporarily unavailable."),
    504: ("api_error", "gateway_timeout", "The upstream gateway timed out."),
}


@dataclass(frozen=True)
class _Response:
    status: int
    # bytes go out as they are: garbage answers are not always JSON, or not encodable by json.
    body: JsonObject | list[Any] | bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Fault:
    """One injected fault; see the module docstring for the kinds and their parameters."""

    kind: str
    on: str = "charge"
    key: str | None = None
    ms: int | None = None
    status: int | None = None
    retry_after: int | None = None
    variant: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS_BY_TARGET.get(self.on, ()):
            raise _InvalidRequestError(f"No fault {self.kind!r} on {self.on!r}; see the docstring.")
        required, optional = FAULT_PARAMETERS[self.kind]
        given = {name for name in FAULT_PARAMETER_NAMES if getattr(self, name) is not None}
        if required - given:
            raise _InvalidRequestError(f"Fault {self.kind!r} needs {sorted(required - given)}.")
        if given - required - optional:
            raise _InvalidRequestError(f"Fault {self.kind!r} takes no {sorted(given - required)}.")
        for name in given - {"variant"}:
            if type(getattr(self, name)) is not int or getattr(self, name) < 0:
                raise _InvalidRequestError(f"Fault {name!r} must be a non-negative integer.")
        if self.status is not None and not 400 <= self.status <= 599:
            raise _InvalidRequestError("Fault 'status' must be an error status, 400 to 599.")
        if self.variant is not None and self.variant not in GARBAGE_VARIANTS:
            raise _InvalidRequestError(f"Unknown garbage variant {self.variant!r}.")
        if self.key is not None and not (isinstance(self.key, str) and self.key):
            raise _InvalidRequestError("Fault 'key' must be a non-empty string.")

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> Fault:
        if not isinstance(fields, Mapping):
            raise _InvalidRequestError("A fault must be a JSON object.")
        unknown = sorted(set(fields) - FAULT_FIELDS)
        if unknown:
            raise _InvalidRequestError(f"Unknown fault field(s): {', '.join(unknown)}.")
        if "kind" not in fields:
            raise _InvalidRequestError("A fault needs a 'kind'.")
        return cls(**fields)

    def to_dict(self) -> JsonObject:
        return {name: value for name, value in asdict(self).items() if value is not None}

    def matches(self, on: str, key: str | None) -> bool:
        return self.on == on and (self.key is None or self.key == key)


@dataclass(frozen=True)
class _ChargeRequest:
    amount: int
    currency: str
    source: str
    reference: str | None
    description: str | None
    fingerprint: str


@dataclass
class _KeyState:
    request: _ChargeRequest
    first_attempt_at: float
    attempts: int = 0
    in_progress: bool = False
    result: _Response | None = None
    charge: JsonObject | None = None

    @property
    def charged(self) -> bool:
        return self.result is not None and self.result.status == 200


class _InvalidRequestError(ValueError):
    pass


def _error(status: int, error_type: str, message: str, **fields: str) -> _Response:
    return _Response(status, {"error": {"type": error_type, **fields, "message": message}})


def _status_error(status: int, retry_after: int | None = None) -> _Response:
    """The contract-shaped error answer for a status, with Retry-After if one is given."""
    if status == 401:
        return _unauthorized()
    fallback = ("invalid_request_error", "invalid_request", "The request was invalid.")
    if status >= 500:
        fallback = ("api_error", "internal_error", "An internal error occurred.")
    error_type, code, message = STATUS_ERRORS.get(status, fallback)
    response = _error(status, error_type, message, code=code)
    if retry_after is None:
        return response
    return _Response(status, response.body, (("Retry-After", str(retry_after)),))


def _garbage(variant: str, charge: JsonObject) -> _Response:
    """A 200 answer whose body a client cannot use, built from the charge it stands for."""
    if variant == "not_json":
        return _Response(200, b"<html>oops")
    if variant == "deep_json":
        return _Response(200, b"[" * DEEP_JSON_DEPTH + b"]" * DEEP_JSON_DEPTH)
    if variant == "not_object":
        return _Response(200, [charge])
    if variant == "missing_id":
        return _Response(200, {name: value for name, value in charge.items() if name != "id"})
    changed = {
        "long_id": {"id": str(charge.get("id") or "ch_").ljust(LONG_ID_LENGTH, "x")},
        "bad_id": {"id": "ch_ bad\u00e9"},
        "bad_status": {"status": "weird"},
    }[variant]
    return _Response(200, {**charge, **changed})


def _unauthorized() -> _Response:
    body = _error(401, "authentication_error", "Invalid API key provided.").body
    return _Response(401, body, (("WWW-Authenticate", "Bearer"),))


def _invalid_request(message: str, status: int = 400, **fields: str) -> _Response:
    return _error(status, "invalid_request_error", message, **fields)


def _parse_json_object(raw_body: bytes) -> JsonObject:
    try:
        body = json.loads(raw_body)
    except (ValueError, RecursionError):
        raise _InvalidRequestError("Request body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise _InvalidRequestError("Request body must be a JSON object.")
    return body


def _parse_charge_request(raw_body: bytes) -> _ChargeRequest:
    body = _parse_json_object(raw_body)
    # Unknown fields are rejected so that a client drifting from the contract fails loudly here.
    unknown = sorted(set(body) - CHARGE_FIELDS)
    if unknown:
        raise _InvalidRequestError(f"Unknown parameter(s): {', '.join(unknown)}.")

    amount = body.get("amount")
    if type(amount) is not int or amount <= 0:
        raise _InvalidRequestError("amount must be a positive integer (minor units).")
    currency = body.get("currency")
    if not (isinstance(currency, str) and len(currency) == 3):
        raise _InvalidRequestError("currency must be a three-letter ISO code.")
    if not (currency.isascii() and currency.isalpha()):
        raise _InvalidRequestError("currency must be a three-letter ISO code.")
    source = body.get("source")
    if not (isinstance(source, str) and source.startswith("tok_") and len(source) > 4):
        raise _InvalidRequestError("source must be a token starting with 'tok_'.")
    for optional in ("reference", "description"):
        if body.get(optional) is not None and not isinstance(body[optional], str):
            raise _InvalidRequestError(f"{optional} must be a string.")

    return _ChargeRequest(
        amount=amount,
        currency=currency,
        source=source,
        reference=body.get("reference"),
        description=body.get("description"),
        fingerprint=json.dumps(body, sort_keys=True, separators=(",", ":")),
    )


def _decide(request: _ChargeRequest, attempt: int) -> tuple[_Response, JsonObject | None]:
    """The answer to one processing attempt, and the charge record if a charge was made."""
    source = request.source
    if source == "tok_error":
        return _status_error(500), None
    if source == "tok_flaky" and attempt <= FLAKY_FAILURES_PER_KEY:
        return _status_error(503), None
    if source == "tok_rateLimited" and attempt <= RATE_LIMITED_FAILURES_PER_KEY:
        return _status_error(429, RATE_LIMIT_RETRY_AFTER_S), None

    charge: JsonObject = {
        "id": f"ch_{secrets.token_hex(12)}",
        "status": "succeeded",
        "amount": request.amount,
        "currency": request.currency,
        "reference": request.reference,
        "created": int(time.time()),
    }
    if source in DECLINES:
        code, message = DECLINES[source]
        declined = _error(402, "card_error", message, code="card_declined", decline_code=code)
        charge.update(status="declined", error=declined.body["error"])
        return declined, charge
    return _Response(200, charge), charge


class FakeProvider:
    """The fake provider; `start()` serves it on a daemon thread.

    After `stop()`, `start()` serves again on the same port with the same charges, so a test
    can take the provider down and bring it back.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = "sk_test_fake",
        latency_ms: int = 0,
        jitter_ms: int = 0,
        timeout_window_s: float = 10.0,
    ) -> None:
        self.host = host
        self.api_key = api_key
        self.latency_ms = latency_ms
        self.jitter_ms = jitter_ms
        self.timeout_window_s = timeout_window_s
        self._port = port
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyState] = {}
        self._requests_by_key: dict[str, int] = {}
        self._faults: deque[Fault] = deque()
        self._faults_applied: list[AppliedFault] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError("FakeProvider picks its port on start(); start it first.")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{CHARGES_PATH}"

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.port}{HEALTH_PATH}"

    def start(self) -> FakeProvider:
        if self._server is not None:
            raise RuntimeError("FakeProvider is already running.")
        self._stopping.clear()
        server = _Server((self.host, self._port), self)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-provider-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def charge_count(self, idempotency_key: str) -> int:
        with self._lock:
            state = self._keys.get(idempotency_key)
            return 1 if state is not None and state.charged else 0

    def total_charges(self) -> int:
        with self._lock:
            return sum(state.charged for state in self._keys.values())

    def request_count(self, idempotency_key: str) -> int:
        with self._lock:
            return self._requests_by_key.get(idempotency_key, 0)

    def in_progress(self, idempotency_key: str) -> bool:
        """Whether a request with this key is being processed (a `slow` fault's wait, say)."""
        with self._lock:
            state = self._keys.get(idempotency_key)
            return state is not None and state.in_progress

    def ledger(self) -> dict[str, JsonObject]:
        """Each charge made, by idempotency key (declines and failures are not charges)."""
        with self._lock:
            return {key: dict(state.charge) for key, state in self._keys.items() if state.charged}

    def inject(self, fault: Fault | Mapping[str, Any]) -> None:
        self.inject_many([fault])

    def inject_many(self, faults: Iterable[Fault | Mapping[str, Any]]) -> None:
        """Queue faults in order; all or none (a ValueError names the first invalid one)."""
        parsed = [fault if isinstance(fault, Fault) else Fault.from_dict(fault) for fault in faults]
        with self._lock:
            self._faults.extend(parsed)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def faults_applied(self) -> list[AppliedFault]:
        with self._lock:
            return list(self._faults_applied)

    def reset(self) -> None:
        """Forget charges, request counts and faults, pending and applied."""
        with self._lock:
            self._keys.clear()
            self._requests_by_key.clear()
            self._faults.clear()
            self._faults_applied.clear()

    def _take_fault(self, on: str, key: str | None) -> Fault | None:
        if not self._faults:  # the hot path: no lock while nothing is queued
            return None
        with self._lock:
            fault = next((fault for fault in self._faults if fault.matches(on, key)), None)
            if fault is not None:
                self._faults.remove(fault)
                self._faults_applied.append((fault.kind, on, key))
            return fault

    def _wait_ms(self, ms: float) -> None:
        # stop() wakes every wait, so a held request never outlives the server.
        if ms > 0:
            self._stopping.wait(ms / 1000)

    def _stored_charge(self, key: str) -> JsonObject | None:
        with self._lock:
            state = self._keys.get(key)
            return state.charge if state is not None else None

    def _serve_charge(self, authorization: str | None, key: str | None, raw_body: bytes) -> _Response | None:
        """The answer to a charge request, or None to close the connection without one."""
        if key:
            with self._lock:
                self._requests_by_key[key] = self._requests_by_key.get(key, 0) + 1
        return self._serve(
            "charge", key, lambda slow_ms: self._charge(authorization, key, raw_body, slow_ms=slow_ms)
        )

    def _serve_lookup(self, authorization: str | None, raw_key: str) -> _Response | None:
        """The answer to a lookup, or None to close the connection without one."""
        key = unquote(raw_key)
        return self._serve("lookup", key, lambda slow_ms: self._lookup(authorization, key))

    def _serve(self, on: str, key: str | None, act: Callable[[int], _Response]) -> _Response | None:
        """`act(slow_ms)` under the next matching fault, if any; None means drop the connection."""
        fault = self._take_fault(on, key)
        if fault is None:
            return act(0)
        if fault.kind == "drop_before":
            return None
        if fault.kind == "status":
            return _status_error(fault.status or 500, fault.retry_after)
        response = act((fault.ms or 0) if fault.kind == "slow" else 0)
        if fault.kind == "drop_after":
            return None
        if fault.kind == "hold":
            self._wait_ms(fault.ms or 0)
        if fault.kind == "garbage":
            charge = self._stored_charge(key) if key else None
            base = charge if charge is not None else response.body
            return _garbage(fault.variant or "not_json", base if isinstance(base, dict) else {})
        return response

    def _authorized(self, authorization: str | None) -> bool:
        expected = f"Bearer {self.api_key}".encode()
        return secrets.compare_digest((authorization or "").encode(), expected)

    def _simulate_latency(self, extra_ms: int = 0) -> None:
        self._wait_ms(self.latency_ms + random.uniform(0, self.jitter_ms) + extra_ms)

    def _hold_if_timing_out(self, state: _KeyState, arrived_at: float) -> None:
        # The charge is already made; holding the answer is what makes the outcome unknown to a
        # client whose read timeout is shorter than the window. stop() wakes the wait.
        if state.request.source != "tok_timeout":
            return
        window_ends_at = state.first_attempt_at + self.timeout_window_s
        if arrived_at < window_ends_at:
            self._stopping.wait(max(0.0, window_ends_at - time.monotonic()))

    def _charge(
        self, authorization: str | None, key: str | None, raw_body: bytes, *, slow_ms: int = 0
    ) -> _Response:
        arrived_at = time.monotonic()
        if not self._authorized(authorization):
            return _unauthorized()
        if not key:
            return _invalid_request("The Idempotency-Key header is required.")
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            return _invalid_request("The Idempotency-Key header is too long.")
        try:
            request = _parse_charge_request(raw_body)
        except _InvalidRequestError as exc:
            return _invalid_request(str(exc))

        with self._lock:
            state = self._keys.setdefault(key, _KeyState(request, first_attempt_at=arrived_at))
            if state.request.fingerprint != request.fingerprint:
                message = "This idempotency key was already used with a different request body."
                return _error(400, "idempotency_error", message, code="key_reused")
            replay = state.result
            if replay is None:
                if state.in_progress:
                    return _status_error(409)
                state.in_progress = True
                state.attempts += 1

        if replay is not None:
            self._simulate_latency(slow_ms)
            self._hold_if_timing_out(state, arrived_at)
            return _Response(replay.status, replay.body, (("Idempotent-Replayed", "true"),))

        # This request owns the key until in_progress is cleared, so state.attempts is stable.
        self._simulate_latency(slow_ms)
        response, charge = _decide(request, state.attempts)
        with self._lock:
            # Storing and releasing together: a retry must see either "in progress" or the result.
            # Only final answers are stored; a 429 or 5xx leaves the key free to be retried.
            if response.status in FINAL_STATUSES:
                state.result, state.charge = response, charge
            state.in_progress = False
        self._hold_if_timing_out(state, arrived_at)
        return response

    def _lookup(self, authorization: str | None, key: str) -> _Response:
        if not self._authorized(authorization):
            return _unauthorized()
        charge = self._stored_charge(key)
        if charge is None:
            return _status_error(404)
        return _Response(200, charge)

    def _charge_counts(self) -> _Response:
        with self._lock:
            by_key = {key: int(state.charged) for key, state in self._keys.items()}
        return _Response(200, {"total": sum(by_key.values()), "by_key": by_key})

    def _ledger_answer(self) -> _Response:
        by_key = self.ledger()
        return _Response(200, {"total": len(by_key), "by_key": by_key})

    def _faults_answer(self, method: str, raw_body: bytes) -> _Response:
        if method == "POST":
            try:
                faults = _parse_json_object(raw_body).get("faults")
                if not isinstance(faults, list):
                    raise _InvalidRequestError('Body must be {"faults": [...]}.')
                self.inject_many(faults)
            except (_InvalidRequestError, TypeError) as exc:
                return _invalid_request(str(exc))
        elif method == "DELETE":
            self.clear_faults()
        with self._lock:
            pending = [fault.to_dict() for fault in self._faults]
            applied = [list(entry) for entry in self._faults_applied]
        return _Response(200, {"pending": pending, "applied": applied})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # server_close() would otherwise join every handler thread, including ones idling on a
    # keep-alive connection; stop() closes those connections itself instead.
    block_on_close = False
    # socketserver's default backlog of 5 resets connections when many clients connect at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], provider: FakeProvider) -> None:
        self.provider = provider
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        # Clients that give up on a held answer, and stop() cutting connections, are expected.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


def _allowed_methods(path: str) -> tuple[str, ...]:
    """The methods a known path answers; none for an unknown path."""
    if path in (HEALTH_PATH, FAKE_CHARGES_PATH, FAKE_LEDGER_PATH):
        return ("GET",)
    if path in (CHARGES_PATH, FAKE_RESET_PATH, FAKE_FAULTS_CLEAR_PATH):
        return ("POST",)
    if path == FAKE_FAULTS_PATH:
        return ("GET", "POST", "DELETE")
    if path.startswith(f"{CHARGES_PATH}/") and len(path) > len(CHARGES_PATH) + 1:
        return ("GET",)
    return ()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeProvider/1.0"
    # Headers and body go out as two writes; with Nagle on, the body waits for the client's
    # delayed ACK and every keep-alive request takes ~40 ms longer.
    disable_nagle_algorithm = True
    server: _Server

    def __getattr__(self, name: str) -> Callable[[], None]:
        # http.server answers a method without a do_<METHOD> with 501; the contract wants 405.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server reports malformed requests as HTML; every answer here is JSON.
        error_type = "invalid_request_error" if code < 500 else "api_error"
        self._send(_error(code, error_type, message or "Bad request."), close=True)

    def _dispatch(self) -> None:
        raw_body = self._read_body()
        if raw_body is None:
            return
        path = urlsplit(self.path).path
        allowed = _allowed_methods(path)
        if not allowed:
            self._send(_invalid_request("Unknown path.", status=404, code="resource_missing"))
        elif self.command not in allowed:
            response = _invalid_request("Method not allowed.", status=405)
            self._send(_Response(405, response.body, (("Allow", ", ".join(allowed)),)))
        else:
            response = self._route(path, raw_body)
            if response is None:
                # An injected drop: no answer at all; the server closes the socket after this.
                self.close_connection = True
            else:
                self._send(response)

    def _route(self, path: str, raw_body: bytes) -> _Response | None:
        provider = self.server.provider
        authorization = self.headers.get("Authorization")
        if path == HEALTH_PATH:
            return _Response(200, {"status": "ok"})
        if path == FAKE_CHARGES_PATH:
            return provider._charge_counts()
        if path == FAKE_LEDGER_PATH:
            return provider._ledger_answer()
        if path == FAKE_FAULTS_CLEAR_PATH:
            provider.clear_faults()
            return provider._faults_answer("GET", b"")
        if path == FAKE_FAULTS_PATH:
            return provider._faults_answer(self.command, raw_body)
        if path == FAKE_RESET_PATH:
            provider.reset()
            return _Response(200, {"status": "reset"})
        if path == CHARGES_PATH:
            key = self.headers.get("Idempotency-Key")
            return provider._serve_charge(authorization, key, raw_body)
        return provider._serve_lookup(authorization, path.removeprefix(f"{CHARGES_PATH}/"))

    def _read_body(self) -> bytes | None:
        """The whole request body, or None after answering a body that cannot be read."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._send(_invalid_request("Content-Length is required.", status=411), close=True)
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            self._send(_invalid_request("Invalid Content-Length."), close=True)
            return None
        if length > MAX_BODY_BYTES:
            self._send(_invalid_request("Request body is too large.", status=413), close=True)
            return None
        return self.rfile.read(length)

    def _send(self, response: _Response, *, close: bool = False) -> None:
        body = response.body
        payload = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the fake payment provider.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--api-key", default="sk_test_fake")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--jitter-ms", type=int, default=0)
    parser.add_argument("--timeout-window-s", type=float, default=10.0)
    args = parser.parse_args(argv)

    provider = FakeProvider(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        timeout_window_s=args.timeout_window_s,
    )

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    provider.start()
    print(f"Fake payment provider listening on {provider.url}", flush=True)
    try:
        while True:
            # Short sleeps: the kernel may deliver SIGINT/SIGTERM to a server thread, which does not
            # interrupt a long sleep here; Python runs the handler when this thread next wakes.
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        provider.stop()


if __name__ == "__main__":
    main()
