"""A client's webhook endpoint for the tests: a real HTTP server on loopback that records every
request and answers as it is told (2xx, 500, a redirect, hang until released, or trickle its
answer a byte at a time), over plain HTTP or TLS (`tls`: a server context, tests.support.tls).

The server is the standard library's (http.server, wrapped in `ssl` for TLS), as the fake
provider's is: a test server needs nothing more; `standardwebhooks` checks what it received, as
a client would.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: str

    def verified(self, secret: str) -> Any:
        """The JSON body, once its Standard Webhooks signature checks out with `secret`."""
        return Webhook(secret).verify(self.body, self.headers)


class Receiver:
    """`mode`: "ok" (204), "500", "redirect" (`redirect_status` to `redirect_to`, by default
    /elsewhere of this receiver), "hang" (answer nothing until `release` is set or `hang_s`
    passes) or "trickle" (a 200 whose status line and headers come one byte every `trickle_s`,
    `trickle_bytes` of them; "trickle_body": its status line and headers at once, then its body so;
    `trickled` then says "cut" if the client closed the connection before the end, else
    "finished").
    `on_request` runs in the server's thread first. `port`: a port an earlier receiver had (an
    endpoint down for a while, then back). `handshake_failures`: TLS handshakes the client broke
    off (a certificate it refused)."""

    def __init__(self, port: int = 0, *, tls: ssl.SSLContext | None = None) -> None:
        self.mode = "ok"
        self.hang_s = 10.0
        self.redirect_status = 302
        self.redirect_to = ""
        self.trickle_s = 0.05
        self.trickle_bytes = 200
        self.trickled: list[str] = []
        self.handshake_failures: list[str] = []
        self.release = threading.Event()
        self.on_request: Callable[[Received], None] | None = None
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                received = Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length).decode(),
                )
                with receiver._lock:
                    receiver.requests.append(received)
                if receiver.on_request is not None:
                    receiver.on_request(received)
                mode = receiver.mode
                if mode == "hang":
                    receiver.release.wait(receiver.hang_s)
                    self._answer(200)
                elif mode == "500":
                    self._answer(500)
                elif mode == "redirect":
                    location = receiver.redirect_to or f"{receiver.origin}/elsewhere"
                    self._answer(receiver.redirect_status, location=location)
                elif mode in ("trickle", "trickle_body"):
                    self._trickle(body=mode == "trickle_body")
                else:
                    self._answer(204)

            def _answer(self, status: int, location: str = "") -> None:
                try:
                    self.send_response(status)
                    if location:
                        self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up (a timeout)

            def _trickle(self, *, body: bool) -> None:
                if body:  # the status line and headers at once, then the body byte by byte
                    head = f"HTTP/1.1 200 OK\r\nContent-Length: {receiver.trickle_bytes}\r\n\r\n"
                    answer, at_once = head + "x" * receiver.trickle_bytes, len(head)
                else:
                    padding = "x" * max(0, receiver.trickle_bytes - 40)
                    answer, at_once = (
                        f"HTTP/1.1 200 OK\r\nX-Padding: {padding}\r\nContent-Length: 0\r\n\r\n",
                        0,
                    )
                raw, outcome = answer.encode(), "finished"
                try:
                    self.wfile.write(raw[:at_once])
                    for byte in raw[at_once:]:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(receiver.trickle_s)
                except OSError:
                    outcome = "cut"  # the client closed the connection mid-answer
                with receiver._lock:
                    receiver.trickled.append(outcome)
                self.close_connection = True

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up mid-request is no error of the test's

            def get_request(self) -> tuple[Any, Any]:
                sock, address = self.socket.accept()
                if tls is None:
                    return sock, address
                try:  # the handshake in the accepting thread: a short one, on loopback
                    return tls.wrap_socket(sock, server_side=True), address
                except (ssl.SSLError, OSError) as exc:
                    receiver.handshake_failures.append(str(exc))
                    sock.close()
                    raise

        self.scheme = "https" if tls is not None else "http"
        self._server = Server(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.origin}/hooks/paymentsite"

    def bodies(self) -> list[Any]:
        with self._lock:
            return [json.loads(r.body) for r in self.requests]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
