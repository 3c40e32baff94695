"""Commit to recorded: how long after the provider commits a charge the service records it succeeded.

The charges are the ones a client cannot settle by itself: `tok_timeout`, which the fake provider
charges at once and whose every answer it holds past the service's read timeout, so the caller
hears 504 outcome unknown while the provider has the charge. What settles them then is either
the provider's own event (`POST /webhooks/provider`) or `run_worker`'s reconcile loop, whose
lookups of an unknown row follow `transitions.lookup_due_q` (first once the call's slowest
possible attempt is over, PAYMENT_DEADLINE_MS + PAYMENT_CONNECT_TIMEOUT_MS + PAYMENT_TIMEOUT_MS
after it began) at most every `--reconcile-every` seconds. Two runs, each with its own fake
provider, gunicorn (the shipped config) and `manage.py run_worker` with its shipped defaults, as
`make run` starts them, on a database of their own on the bench's MariaDB:

- events on: the fake posts each charge's signed event to the service, PAYMENT_WEBHOOK_SECRET
  the same on both sides;
- events off: the fake sends none, so only run_worker's lookups settle them.

The start is the fake's record of when it committed each charge (`GET /_fake/ledger`'s
`committed_at`, wall clock), the end the row's `updated_at` (written with the settle, same
host clock) as first seen `succeeded` by a poll of the database every POLL_INTERVAL_S. The bench
polls the database, never the API: a GET of an unknown charge would look it up itself
(lookup-on-read) and settle it sooner than the worker does.

Bounded: N charges (30 quick, 100 full), ARRIVALS_PER_S a second, then at most SETTLE_WITHIN_S
for them to be recorded; a charge not recorded by then is reported as such.
The breaker is raised out of the way (PAYMENT_BREAKER_FAILURES): with every call timing out it
would refuse later charges, which the provider then never commits; it does not change the
lookup schedule.
"""

from __future__ import annotations

import base64
import contextlib
import math
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import MySQLdb

from bench.infra import (
    PYTHON,
    ROOT,
    FakeProviderProcess,
    Gunicorn,
    free_port,
    http_get_json,
    manage,
    mysql_url,
    recreate_database,
    service_env,
    stop_process,
)
from bench.load import Connection, Request, Sample, percentile
from bench.scenarios import Bench, Figures, _status_summary

DATABASE = "paymentsite_settle"
POLL_INTERVAL_S = 0.1
# One charge a second: each call lasts up to the slowest call (18 s by default), so at most 18 are
# in flight, fewer than one worker's bulkhead (PAYMENT_MAX_CONCURRENT_CALLS, 24) however they fall.
ARRIVALS_PER_S = 1.0
WARM_UP_CHARGES = 6
WARM_UP_PAUSE_S = 0.5
SETTLE_WITHIN_S = 120.0  # after the last charge was answered
EVENTS_P99_AIM_S = 5.0
NO_EVENTS_P99_AIM_S = 60.0
VARIANTS = (("settle_events", True), ("settle_no_events", False))


def charges_for(*, quick: bool) -> int:
    return 30 if quick else 100


def settle_latency(bench: Bench, *, quick: bool) -> dict[str, Figures]:
    """Both runs, events on then off, on one freshly migrated database."""
    recreate_database(port=bench.database_port, database=DATABASE)
    database_url = mysql_url(port=bench.database_port, database=DATABASE)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    base = {"database_url": database_url, "provider": bench.provider, "PAYMENT_WEBHOOK_SECRET": secret}
    manage("migrate", "--noinput", env=service_env(**base))
    token = manage("create_api_client", "settle", env=service_env(**base)).stdout.strip()
    return {
        name: _run(
            bench,
            name,
            events=events,
            secret=secret,
            database_url=database_url,
            token=token,
            charges=charges_for(quick=quick),
        )
        for name, events in VARIANTS
    }


def _run(
    bench: Bench, name: str, *, events: bool, secret: str, database_url: str, token: str, charges: int
) -> Figures:
    server_port = free_port()
    provider = FakeProviderProcess(
        latency_ms=bench.provider.latency_ms,
        log_path=bench.log_dir / f"fake-provider-{name}.log",
        events_url=f"http://127.0.0.1:{server_port}/webhooks/provider" if events else None,
        events_secret=secret,
    )
    scenario = f"{name}-{bench.run_id}"
    with provider:
        env = service_env(
            database_url=database_url,
            provider=provider,
            PAYMENT_WEBHOOK_SECRET=secret,
            PAYMENT_BREAKER_FAILURES="1000",
        )
        server = Gunicorn(env=env, log_path=bench.log_dir / f"gunicorn-{name}.log", port=server_port)
        with (
            server,
            _run_worker(env, bench.log_dir / f"run-worker-{name}.log"),
            _Rows(bench, scenario) as rows,
        ):
            _warm_up(bench, server.url, scenario, token)
            requests = [bench.charge(scenario, n, source="tok_timeout", token=token) for n in range(charges)]
            sent: list[Sample] = []
            sender = threading.Thread(target=lambda: sent.extend(_send_paced(server.url, requests)))
            sender.start()
            deadline = math.inf
            while True:
                rows.poll()
                if not sender.is_alive():
                    deadline = min(deadline, time.monotonic() + SETTLE_WITHIN_S)
                    committed = rows.committed(_committed_at(provider))
                    if set(committed) <= set(rows.recorded_at) or time.monotonic() > deadline:
                        break
                time.sleep(POLL_INTERVAL_S)
            sender.join()
            settled_by_event = rows.settled_by_event()
    return _figures(sent, rows, committed, settled_by_event)


def _committed_at(provider: FakeProviderProcess) -> dict[str, float]:
    return http_get_json(f"{provider.base_url}/_fake/ledger")["committed_at"]


def _warm_up(bench: Bench, base_url: str, scenario: str, token: str) -> None:
    """A few charges that succeed (and, events on, their events), one at a time: the workers have
    loaded the charge and webhook paths and opened their connections before the measured ones."""
    connection = Connection(base_url)
    for number in range(WARM_UP_CHARGES):
        connection.send(bench.charge(f"warmup-{scenario}", number, token=token))
        time.sleep(WARM_UP_PAUSE_S)
    connection.close()


def _send_paced(base_url: str, requests: list[Request]) -> list[Sample]:
    """Each charge on a connection of its own, ARRIVALS_PER_S a second (an open loop: a slow
    answer delays no later send), so each event's figure is its own rather than its place in
    a burst; at most ARRIVALS_PER_S × the slowest call are in flight, below one worker's bulkhead."""
    samples: list[Sample] = []
    started = time.monotonic()

    def send(request: Request) -> None:
        connection = Connection(base_url)
        sent = time.monotonic()
        status, body = connection.send(request)
        connection.close()
        samples.append(Sample(request, sent - started, time.monotonic() - sent, status, body))

    threads = [threading.Thread(target=send, args=(request,), daemon=True) for request in requests]
    for number, thread in enumerate(threads):
        time.sleep(max(0.0, started + number / ARRIVALS_PER_S - time.monotonic()))
        thread.start()
    for thread in threads:
        thread.join()
    return samples


def _figures(sent: list[Sample], rows: _Rows, committed: dict[str, float], settled_by_event: int) -> Figures:
    latencies = [
        recorded - committed[provider_key]
        for provider_key, recorded in rows.recorded_at.items()
        if provider_key in committed
    ]
    return {
        "charges": len(sent),
        "committed": len(committed),
        "recorded": len(latencies),
        "p50_s": percentile(latencies, 0.50),
        "p99_s": percentile(latencies, 0.99),
        "max_s": max(latencies, default=math.nan),
        "min_s": min(latencies, default=math.nan),  # below 0 would be a clock gone wrong
        "settled_by_event": settled_by_event,
        "client_statuses": _status_summary(sent),
    }


class _Rows:
    """The scenario's rows, polled on one autocommit connection (each SELECT sees the latest commit)."""

    def __init__(self, bench: Bench, scenario: str) -> None:
        self._bench, self._prefix = bench, f"{scenario}-%"
        # provider key -> the row's updated_at (Unix time) when first seen succeeded
        self.recorded_at: dict[str, float] = {}

    def __enter__(self) -> _Rows:
        self._connection = MySQLdb.connect(
            host="127.0.0.1", port=self._bench.database_port, user="root", database=DATABASE, autocommit=True
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._connection.close()

    def _select(self, sql: str) -> list[tuple]:
        with self._connection.cursor() as cursor:
            cursor.execute(sql, (self._prefix,))
            return list(cursor.fetchall())

    def poll(self) -> None:
        for provider_key, updated_at in self._select(
            "SELECT provider_idempotency_key, updated_at FROM payments_transaction "
            "WHERE idempotency_key LIKE %s AND status = 'succeeded'"
        ):
            # MariaDB's DATETIME(6) holds Django's UTC time, read back naive.
            self.recorded_at.setdefault(provider_key, updated_at.replace(tzinfo=UTC).timestamp())

    def committed(self, committed_at: dict[str, float]) -> dict[str, float]:
        """The provider's commit times of this scenario's rows (not the warm-up's)."""
        rows = self._select(
            "SELECT provider_idempotency_key FROM payments_transaction WHERE idempotency_key LIKE %s"
        )
        return {key: committed_at[key] for (key,) in rows if key in committed_at}

    def settled_by_event(self) -> int:
        return self._select(
            "SELECT COUNT(*) FROM payments_providerevent e JOIN payments_transaction t "
            "ON e.transaction_id = t.id WHERE t.idempotency_key LIKE %s AND e.effect = 'applied'"
        )[0][0]


@contextlib.contextmanager
def _run_worker(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """`manage.py run_worker -v 0` with its shipped defaults, as scripts/run.sh (make run) starts it."""
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            [PYTHON, "manage.py", "run_worker", "-v", "0"],
            cwd=ROOT,
            env={**env, "LOG_LEVEL": "WARNING"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield worker
    finally:
        stop_process(worker)


def table_rows(results: dict[str, Figures]) -> list[str]:
    """The two rows of bench/run.py's table."""
    rows = []
    for name, label, aim in (
        ("settle_events", "provider events on (`POST /webhooks/provider`)", EVENTS_P99_AIM_S),
        ("settle_no_events", "provider events off (run_worker's lookups only)", NO_EVENTS_P99_AIM_S),
    ):
        figures = results.get(name)
        if not figures:
            continue
        recorded_all = figures["committed"] > 0 and figures["recorded"] == figures["committed"]
        met = recorded_all and figures["p99_s"] <= aim
        rows.append(
            f"| Commit to recorded, {label}: {figures['charges']:.0f} charges timed out at the client "
            f"(`tok_timeout`), committed by the provider "
            f"| recorded {figures['recorded']:.0f}/{figures['committed']:.0f}; p50 {figures['p50_s']:.2f} s, "
            f"**p99 {figures['p99_s']:.2f} s**, max {figures['max_s']:.2f} s; settled by an event: "
            f"{figures['settled_by_event']:.0f}; the client saw {figures['client_statuses']} "
            f"| p99 ≤ {aim:.0f} s | {'yes' if met else '**no**'} |"
        )
    return rows
