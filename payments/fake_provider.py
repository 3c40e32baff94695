"""A fake payment provider: a real HTTP server on loopback that speaks the provider contract.

Behaviour is chosen by the charge's `source` token, like a card network's test cards (see the
"Provider contract" section of DESIGN.md). Stdlib only, so it runs without Django:

    python -m payments.fake_provider --port 8099
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
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

CHARGES_PATH = "/v1/charges"
HEALTH_PATH = "/health"
FAKE_CHARGES_PATH = "/_fake/charges"
FAKE_RESET_PATH = "/_fake/reset"

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

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class _Response:
    status: int
    body: JsonObject
    headers: tuple[tuple[str, str], ...] = ()


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


class _InvalidRequestError(Exception):
    pass


def _error(status: int, error_type: str, message: str, **fields: str) -> _Response:
    return _Response(status, {"error": {"type": error_type, **fields, "message": message}})


def _unauthorized() -> _Response:
    body = _error(401, "authentication_error", "Invalid API key provided.").body
    return _Response(401, body, (("WWW-Authenticate", "Bearer"),))


def _invalid_request(message: str, status: int = 400, **fields: str) -> _Response:
    return _error(status, "invalid_request_error", message, **fields)


def _parse_charge_request(raw_body: bytes) -> _ChargeRequest:
    try:
        body = json.loads(raw_body)
    except ValueError:
        raise _InvalidRequestError("Request body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise _InvalidRequestError("Request body must be a JSON object.")

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
        return _error(500, "api_error", "An internal error occurred.", code="internal_error"), None
    if source == "tok_flaky" and attempt <= FLAKY_FAILURES_PER_KEY:
        message = "The service is temporarily unavailable."
        return _error(503, "api_error", message, code="service_unavailable"), None
    if source == "tok_rateLimited" and attempt <= RATE_LIMITED_FAILURES_PER_KEY:
        response = _error(429, "rate_limit_error", "Too many requests.", code="rate_limited")
        retry_after = (("Retry-After", str(RATE_LIMIT_RETRY_AFTER_S)),)
        return _Response(response.status, response.body, retry_after), None

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

    def reset(self) -> None:
        with self._lock:
            self._keys.clear()
            self._requests_by_key.clear()

    def _authorized(self, authorization: str | None) -> bool:
        expected = f"Bearer {self.api_key}".encode()
        return secrets.compare_digest((authorization or "").encode(), expected)

    def _simulate_latency(self) -> None:
        delay_ms = self.latency_ms + random.uniform(0, self.jitter_ms)
        if delay_ms > 0:
            self._stopping.wait(delay_ms / 1000)

    def _hold_if_timing_out(self, state: _KeyState, arrived_at: float) -> None:
        # The charge is already made; holding the answer is what makes the outcome unknown to a
        # client whose read timeout is shorter than the window. stop() wakes the wait.
        if state.request.source != "tok_timeout":
            return
        window_ends_at = state.first_attempt_at + self.timeout_window_s
        if arrived_at < window_ends_at:
            self._stopping.wait(max(0.0, window_ends_at - time.monotonic()))

    def _charge(self, authorization: str | None, key: str | None, raw_body: bytes) -> _Response:
        arrived_at = time.monotonic()
        if key:
            with self._lock:
                self._requests_by_key[key] = self._requests_by_key.get(key, 0) + 1
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
                    message = "A request with this idempotency key is still being processed."
                    return _error(409, "idempotency_error", message, code="request_in_progress")
                state.in_progress = True
                state.attempts += 1

        if replay is not None:
            self._simulate_latency()
            self._hold_if_timing_out(state, arrived_at)
            return _Response(replay.status, replay.body, (("Idempotent-Replayed", "true"),))

        # This request owns the key until in_progress is cleared, so state.attempts is stable.
        self._simulate_latency()
        response, charge = _decide(request, state.attempts)
        with self._lock:
            # Storing and releasing together: a retry must see either "in progress" or the result.
            # Only final answers are stored; a 429 or 5xx leaves the key free to be retried.
            if response.status in FINAL_STATUSES:
                state.result, state.charge = response, charge
            state.in_progress = False
        self._hold_if_timing_out(state, arrived_at)
        return response

    def _lookup(self, authorization: str | None, raw_key: str) -> _Response:
        if not self._authorized(authorization):
            return _unauthorized()
        key = unquote(raw_key)
        with self._lock:
            state = self._keys.get(key)
            charge = state.charge if state is not None else None
        if charge is None:
            message = "No charge was made with this idempotency key."
            return _invalid_request(message, status=404, code="resource_missing")
        return _Response(200, charge)

    def _ledger(self) -> _Response:
        with self._lock:
            by_key = {key: int(state.charged) for key, state in self._keys.items()}
        return _Response(200, {"total": sum(by_key.values()), "by_key": by_key})


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


def _allowed_method(path: str) -> str | None:
    """The one method a known path answers, or None for an unknown path."""
    if path in (HEALTH_PATH, FAKE_CHARGES_PATH):
        return "GET"
    if path in (CHARGES_PATH, FAKE_RESET_PATH):
        return "POST"
    if path.startswith(f"{CHARGES_PATH}/") and len(path) > len(CHARGES_PATH) + 1:
        return "GET"
    return None


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
        allowed = _allowed_method(path)
        if allowed is None:
            self._send(_invalid_request("Unknown path.", status=404, code="resource_missing"))
        elif self.command != allowed:
            response = _invalid_request("Method not allowed.", status=405)
            self._send(_Response(405, response.body, (("Allow", allowed),)))
        else:
            self._send(self._route(path, raw_body))

    def _route(self, path: str, raw_body: bytes) -> _Response:
        provider = self.server.provider
        authorization = self.headers.get("Authorization")
        if path == HEALTH_PATH:
            return _Response(200, {"status": "ok"})
        if path == FAKE_CHARGES_PATH:
            return provider._ledger()
        if path == FAKE_RESET_PATH:
            provider.reset()
            return _Response(200, {"status": "reset"})
        if path == CHARGES_PATH:
            return provider._charge(authorization, self.headers.get("Idempotency-Key"), raw_body)
        return provider._lookup(authorization, path.removeprefix(f"{CHARGES_PATH}/"))

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
        payload = json.dumps(response.body, separators=(",", ":")).encode()
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
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        provider.stop()


if __name__ == "__main__":
    main()
