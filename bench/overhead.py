"""What one authenticated `GET /api/v1/charges/<id>` costs, step by step, beside `/health/live`.

    .venv/bin/python -m bench.overhead [--requests N] [--json]

In this process, on one thread, with no load: Django's WSGI handler is called as gunicorn
calls it (an environ in, the body iterated and closed), against a database of its own
(`paymentsite_overhead` in the MariaDB at BENCH_DB_HOST:BENCH_DB_PORT, dropped and recreated)
and a fake provider that made the charge. Every figure is the thread's CPU time
(`time.thread_time_ns`) per request, the median of five rounds: MariaDB's own CPU is not in
it, the client side of each query is. Printed, for the GET:

- the whole request, and `/health/live` (the ratio the benchmark's GET row aims at, ≤ 3×);
- each middleware's own share (its time less that of what it calls: every `get_response` in
  the chain is timed, the timer's own cost taken off), Django's handler outside the chain
  (the request object, the request_started/finished signals), and the view below the chain;
- the view's steps, each called on its own: URL resolution, the API-key authentication,
  the charge's read (three queries), the lookup-on-read check, the serializer, the renderer;
- one request metric (`core.metrics.observe_request`) and one access line as gunicorn writes
  it (its format and atoms, the AccessRequestId filter, the JSON formatter, to /dev/null).

`python -m bench.run --only overhead` runs it too and puts its figures in the table. The
step timings are a small hand-written loop: `timeit` times wall-clock, not one thread's CPU,
and cannot see inside Django's middleware chain.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.infra import ROOT, FakeProviderProcess, mysql_url, recreate_database, service_env

DATABASE_NAME = "paymentsite_overhead"
ROUNDS = 5
Step = tuple[str, float]


def cpu_us(call: Callable[[], object], requests: int) -> float:
    """The median over ROUNDS of this thread's CPU time per call, in µs."""
    for _ in range(max(5, requests // 20)):
        call()
    rounds = []
    for _ in range(ROUNDS):
        started = time.thread_time_ns()
        for _ in range(requests):
            call()
        rounds.append((time.thread_time_ns() - started) / requests / 1000)
    return statistics.median(rounds)


def wsgi_environ(method: str, path: str, token: str, body: bytes = b"") -> dict[str, Any]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench.overhead",
        "HTTP_ACCEPT": "*/*",
        "HTTP_AUTHORIZATION": f"Token {token}",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if body:
        environ.update(CONTENT_TYPE="application/json", CONTENT_LENGTH=str(len(body)))
    return environ


def serve(handler: Callable, environ: dict[str, Any], expect: str) -> bytes:
    statuses: list[str] = []
    result = handler(environ, lambda status, headers, exc_info=None: statuses.append(status))
    try:
        body = b"".join(result)
    finally:
        result.close()  # request_finished, as gunicorn's worker does
    if not statuses[0].startswith(expect):
        raise SystemExit(f"{environ['PATH_INFO']} answered {statuses[0]}: {body[:300]!r}")
    return body


class Timed:
    """Stands in for a middleware's `get_response`: this thread's CPU time spent below it."""

    def __init__(self, inner: Callable) -> None:
        self.inner, self.ns, self.calls = inner, 0, 0

    def __call__(self, request: Any) -> Any:
        started = time.thread_time_ns()
        try:
            return self.inner(request)
        finally:
            self.ns += time.thread_time_ns() - started
            self.calls += 1


def middleware_shares(handler: Any, call: Callable[[], object], requests: int) -> list[Step]:
    """Each middleware's own CPU per request (what it calls taken off), then the view below them."""
    names, timers, link = [], [Timed(handler._middleware_chain)], handler._middleware_chain
    while hasattr(link, "__wrapped__") and hasattr(link.__wrapped__, "get_response"):
        middleware = link.__wrapped__  # convert_exception_to_response keeps what it wraps
        names.append(f"{type(middleware).__module__}.{type(middleware).__name__}")
        link = middleware.get_response
        middleware.get_response = Timed(link)
        timers.append(middleware.get_response)
    handler._middleware_chain = timers[0]
    probe = Timed(lambda request: None)
    for _ in range(requests):
        probe(None)
    timer_ns = probe.ns / probe.calls  # one timer's own cost, counted in the frame around it
    for _ in range(5):
        call()
    for timer in timers:
        timer.ns = timer.calls = 0
    for _ in range(requests):
        call()
    inclusive = [timer.ns / requests / 1000 for timer in timers]
    steps = [
        (name, inclusive[i] - inclusive[i + 1] - timer_ns / 1000 * timers[i + 1].calls / requests)
        for i, name in enumerate(names)
    ]
    steps.append(("view below the chain (URL resolution, DRF, the read)", inclusive[-1]))
    return steps  # the chain stays timed: measure nothing else with this handler


def access_line() -> Callable[[], None]:
    """One access line as gunicorn writes it with paymentsite/gunicorn.conf.py."""
    from core.logs.formatters import JsonFormatter

    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "paymentsite" / "gunicorn.conf.py")
    assert spec and spec.loader
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115  (lives as long as the process)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("bench.overhead.access")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    logger.addFilter(conf.AccessRequestId())
    atoms = {"h": "127.0.0.1", "r": "GET /api/v1/charges/x HTTP/1.1", "s": "200", "b": "1234", "M": "3"}
    atoms.update({"{x-request-id}o": "0123456789abcdef0123456789abcdef", "t": "[03/Dec/2026:15:00:00 +0000]"})
    return lambda: logger.info(conf.access_log_format, atoms)


def measure(requests: int) -> dict[str, Any]:
    import django
    from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
    from django.core.management import call_command
    from django.db import connection
    from django.urls import resolve

    django.setup()
    call_command("migrate", "--noinput", verbosity=0)
    from django.contrib.auth import get_user_model
    from rest_framework.renderers import JSONRenderer
    from rest_framework.request import Request

    from apikeys.authentication import APIKeyAuthentication
    from apikeys.models import APIKey
    from core import metrics
    from payments import services
    from payments.api.refund_serializers import ChargeDetailSerializer
    from payments.api.views import transaction_for

    user = get_user_model().objects.create_user(username="overhead")
    _, token = APIKey.objects.issue(user, "overhead")
    handler = WSGIHandler()
    body = b'{"amount": 1999, "currency": "USD", "source": "tok_visa", "description": "bench"}'
    created = serve(handler, wsgi_environ("POST", "/api/v1/charges", token, body), "201")
    charge_id = json.loads(created)["id"]
    path = f"/api/v1/charges/{charge_id}"

    def get() -> bytes:
        return serve(handler, wsgi_environ("GET", path, token), "200")

    def live() -> bytes:
        return serve(handler, wsgi_environ("GET", "/health/live", token), "200")

    queries: list[str] = []

    def count(execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        get()
    request = Request(WSGIRequest(wsgi_environ("GET", path, token)))
    request.user = user
    txn = transaction_for(request, charge_id)
    authentication = APIKeyAuthentication()
    data = ChargeDetailSerializer(txn).data
    steps: list[Step] = [
        ("URL resolution", cpu_us(lambda: resolve(path), requests)),
        (
            "API-key authentication (the key's row and its user)",
            cpu_us(
                lambda: authentication.authenticate(Request(WSGIRequest(wsgi_environ("GET", path, token)))),
                requests,
            ),
        ),
        (
            "the charge's read (charge, attempts, refunds)",
            cpu_us(lambda: transaction_for(request, charge_id), requests),
        ),
        (
            "lookup-on-read check (a settled charge)",
            cpu_us(lambda: services.charge_lookup_on_read(txn), requests),
        ),
        ("serializer (ChargeDetailSerializer)", cpu_us(lambda: ChargeDetailSerializer(txn).data, requests)),
        ("renderer (JSONRenderer)", cpu_us(lambda: JSONRenderer().render(data), requests)),
        (
            "one request metric (observe_request)",
            cpu_us(
                lambda: metrics.observe_request(route="/x", method="GET", status_code=200, seconds=0.01),
                requests,
            ),
        ),
        ("one access line (gunicorn's, JSON)", cpu_us(access_line(), requests)),
    ]
    whole_get, whole_live = cpu_us(get, requests), cpu_us(live, requests)
    chain = middleware_shares(handler, get, requests)
    return {
        "requests": requests,
        "get_us": whole_get,
        "live_us": whole_live,
        "get_live_ratio": whole_get / whole_live,
        "get_queries": len(queries),
        "middleware": chain,
        "steps": steps,
    }


def render(figures: dict[str, Any]) -> str:
    get_us = figures["get_us"]

    def rows(steps: list[Step]) -> list[str]:
        return [f"| {name} | {us:,.0f} | {us / get_us:.0%} |" for name, us in steps]

    return "\n".join(
        [
            f"In-process CPU per request (one thread, no load; median of {ROUNDS} rounds of "
            f"{figures['requests']:,} requests):",
            "",
            f"- `GET /api/v1/charges/<id>`: **{get_us:,.0f} µs** ({figures['get_queries']} queries)",
            f"- `GET /health/live`: **{figures['live_us']:,.0f} µs**",
            f"- ratio: **{figures['get_live_ratio']:.1f}×**",
            "",
            "| Within the GET: the middleware chain (each one's own time) | µs | of the GET |",
            "|---|---|---|",
            *rows(figures["middleware"]),
            "",
            "| Each step on its own | µs | of the GET |",
            "|---|---|---|",
            *rows(figures["steps"]),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="Requests per round (default 300).")
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    args = parser.parse_args(argv)
    host = os.environ.get("BENCH_DB_HOST", "127.0.0.1")
    port = int(os.environ.get("BENCH_DB_PORT", "3306"))
    recreate_database(host=host, port=port, database=DATABASE_NAME)
    with (
        tempfile.TemporaryDirectory(prefix="paymentsite-prometheus-") as prometheus_dir,
        tempfile.TemporaryDirectory(prefix="paymentsite-overhead-") as log_dir,
        FakeProviderProcess(latency_ms=0, log_path=Path(log_dir) / "fake-provider.log") as provider,
    ):
        # As gunicorn runs it: production settings, the metrics in multiprocess mode.
        os.environ.update(
            service_env(
                database_url=mysql_url(host=host, port=port, database=DATABASE_NAME), provider=provider
            ),
            PROMETHEUS_MULTIPROC_DIR=prometheus_dir,
            DJANGO_SETTINGS_MODULE="paymentsite.settings",
            LOG_LEVEL="WARNING",
        )
        figures = measure(args.requests)
    print(json.dumps(figures) if args.json else render(figures))


if __name__ == "__main__":
    main()
