"""A client's webhook endpoint for the tests: a real HTTP server on loopback that records every
request and answers as it is told (2xx, 500, a redirect, or hang until released).

The server is the standard library's (http.server), as the fake provider's is: a test server needs
nothing more; `standardwebhooks` checks what it received, as a client would.
"""

from __future__ import annotations

import json
import threading
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
    """`mode`: "ok" (204), "500", "redirect" (302 to /elsewhere) or "hang" (answer nothing until
    `release` is set or `hang_s` passes). `on_request` runs in the server's thread first. `port`:
    a port an earlier receiver had (an endpoint down for a while, then back)."""

    def __init__(self, port: int = 0) -> None:
        self.mode = "ok"
        self.hang_s = 10.0
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
                    self._answer(302, location=f"http://127.0.0.1:{receiver.port}/elsewhere")
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

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/paymentsite"

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
