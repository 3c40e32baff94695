"""The fake provider's HTTP server: a ThreadingHTTPServer that routes to a FakeProvider."""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import urlsplit

from fakeprovider.protocol import (
    CHARGES_PATH,
    FAKE_CHARGES_PATH,
    FAKE_FAULTS_CLEAR_PATH,
    FAKE_FAULTS_PATH,
    FAKE_LEDGER_PATH,
    FAKE_REFUNDS_PATH,
    FAKE_REFUNDS_SETTLE_PATH,
    FAKE_RESET_PATH,
    HEALTH_PATH,
    MAX_BODY_BYTES,
    _error,
    _invalid_request,
    _Response,
)


class Backend(Protocol):
    """What the server asks of the provider it routes to (FakeProvider is the one)."""

    def _charge_counts(self) -> _Response: ...
    def _ledger_answer(self) -> _Response: ...
    def _faults_answer(self, method: str, raw_body: bytes) -> _Response: ...
    def _serve_charge(
        self, authorization: str | None, key: str | None, raw_body: bytes
    ) -> _Response | None: ...
    def _serve_lookup(self, authorization: str | None, raw_key: str) -> _Response | None: ...
    def _serve_refund(
        self, authorization: str | None, raw_charge_key: str, key: str | None, raw_body: bytes
    ) -> _Response | None: ...
    def _serve_refund_lookup(
        self, authorization: str | None, raw_charge_key: str, raw_refund_key: str
    ) -> _Response | None: ...
    def _refunds_answer(self) -> _Response: ...
    def _settle_refund_answer(self, raw_body: bytes) -> _Response: ...
    def clear_faults(self) -> None: ...
    def reset(self) -> None: ...
    def _note_trickle(self, *, sent: int, total: int, hung_up: bool) -> None: ...
    def _wait_ms_or_stop(self, ms: float) -> bool: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # server_close() would otherwise join every handler thread, including ones idling on a
    # keep-alive connection; stop() closes those connections itself instead.
    block_on_close = False
    # socketserver's default backlog of 5 resets connections when many clients connect at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], provider: Backend) -> None:
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


# A charge's refunds (POST) and one refund (GET), keys percent-encoded; any other path below the
# charges path is a charge lookup, as before refunds.
REFUNDS_PATH = re.compile(rf"^{re.escape(CHARGES_PATH)}/([^/]+)/refunds$")
REFUND_PATH = re.compile(rf"^{re.escape(CHARGES_PATH)}/([^/]+)/refunds/([^/]+)$")


def _allowed_methods(path: str) -> tuple[str, ...]:
    """The methods a known path answers; none for an unknown path."""
    if path in (HEALTH_PATH, FAKE_CHARGES_PATH, FAKE_LEDGER_PATH, FAKE_REFUNDS_PATH):
        return ("GET",)
    if path in (CHARGES_PATH, FAKE_RESET_PATH, FAKE_FAULTS_CLEAR_PATH, FAKE_REFUNDS_SETTLE_PATH):
        return ("POST",)
    if REFUNDS_PATH.match(path):
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
            # No error code: `resource_missing` is the lookup's "no charge with this key" only.
            self._send(_invalid_request("Unrecognized request URL.", status=404))
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
        if path == FAKE_REFUNDS_PATH:
            return provider._refunds_answer()
        if path == FAKE_REFUNDS_SETTLE_PATH:
            return provider._settle_refund_answer(raw_body)
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
        if refunds := REFUNDS_PATH.match(path):
            key = self.headers.get("Idempotency-Key")
            return provider._serve_refund(authorization, refunds[1], key, raw_body)
        if refund := REFUND_PATH.match(path):
            return provider._serve_refund_lookup(authorization, refund[1], refund[2])
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
        if response.trickle_ms:
            self._trickle(response, payload)
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _trickle(self, response: _Response, payload: bytes) -> None:
        """Send the whole answer a byte at a time, until it is out or the client hangs up."""
        lines = [f"HTTP/1.1 {response.status} {self.responses.get(response.status, ('',))[0]}"]
        lines += [
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(payload)}",
            "Connection: close",
        ]
        lines += [f"{name}: {value}" for name, value in response.headers]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
        self.close_connection = True
        sent, hung_up = 0, False
        try:
            for index in range(len(raw)):
                if not self.server.provider._wait_ms_or_stop(response.trickle_ms):
                    break  # the server is stopping
                if _peer_closed(self.connection):
                    hung_up = True
                    break
                self.connection.sendall(raw[index : index + 1])
                sent += 1
        except OSError:
            hung_up = True
        self.server.provider._note_trickle(sent=sent, total=len(raw), hung_up=hung_up)


def _peer_closed(connection: socket.socket) -> bool:
    """Whether the client has closed its end (readable, and nothing left to read)."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
