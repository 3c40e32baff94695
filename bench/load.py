"""A small closed-loop load generator: C threads, each with one keep-alive connection.

Threads rather than asyncio because each client spends its time blocked on the
server, and http.client costs little CPU per request: on a 2-core machine the
generator must leave the cores to the server, and its own CPU time is measured
(`client_cpu_s`) so that a reader can check it did. Every run is bounded both in
requests and in seconds.
"""

from __future__ import annotations

import http.client
import itertools
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

CLIENT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    tag: str = ""


@dataclass(frozen=True)
class Sample:
    request: Request
    started_s: float  # since the run's start
    latency_s: float
    status: int  # 0: the connection failed or was cut
    body: bytes = b""

    @property
    def ended_s(self) -> float:
        return self.started_s + self.latency_s

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class LoadResult:
    samples: list[Sample]
    started_at: float  # time.monotonic() at the run's start: Sample.started_s counts from here
    elapsed_s: float
    client_cpu_s: float

    def with_status(self, *statuses: int) -> list[Sample]:
        return [s for s in self.samples if s.status in statuses]

    def throughput(self, *statuses: int) -> float:
        return len(self.with_status(*statuses)) / self.elapsed_s if self.elapsed_s else 0.0

    def status_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for sample in self.samples:
            counts[sample.status] = counts.get(sample.status, 0) + 1
        return dict(sorted(counts.items()))


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


class Connection:
    """One keep-alive HTTP connection that reconnects after a failure."""

    def __init__(self, base_url: str, timeout_s: float = CLIENT_TIMEOUT_S) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None

    def send(self, request: Request) -> tuple[int, bytes]:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            self._connection.request(request.method, request.path, body=request.body, headers=request.headers)
            response = self._connection.getresponse()
            body = response.read()
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return response.status, body
        except (OSError, http.client.HTTPException):
            self.close()
            return 0, b""

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def run_load(
    *,
    base_url: str,
    make_request: Callable[[int], Request],
    concurrency: int,
    max_requests: int,
    max_duration_s: float,
    pace_s: float = 0.0,
) -> LoadResult:
    """`concurrency` clients send requests back to back (each at most one per `pace_s`).

    No request starts after `max_duration_s` or beyond `max_requests`; the result
    covers every request started, and `elapsed_s` runs until the last one ended.
    """
    numbers = itertools.count()
    samples: list[Sample] = []
    lock = threading.Lock()
    started = time.monotonic()
    cpu_started = time.process_time()

    def client() -> None:
        connection = Connection(base_url)
        mine: list[Sample] = []
        try:
            while True:
                number = next(numbers)
                sent = time.monotonic()
                if number >= max_requests or sent - started >= max_duration_s:
                    return
                request = make_request(number)
                status, body = connection.send(request)
                latency_s = time.monotonic() - sent
                mine.append(Sample(request, sent - started, latency_s, status, body))
                if pace_s > latency_s:
                    time.sleep(pace_s - latency_s)
        finally:
            connection.close()
            with lock:
                samples.extend(mine)

    threads = [threading.Thread(target=client, name=f"load-{n}", daemon=True) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples.sort(key=lambda s: s.started_s)
    return LoadResult(
        samples=samples,
        started_at=started,
        elapsed_s=time.monotonic() - started,
        client_cpu_s=time.process_time() - cpu_started,
    )
