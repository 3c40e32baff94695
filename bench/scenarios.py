"""The benchmark's scenarios. Each one runs against its own gunicorn and returns its figures.

Figures are plain numbers keyed by name; bench/run.py takes their medians over runs
and renders the table. The service against the raw floor is bench/versus_floor.py, the
provider hang and the spike bench/incident.py (both with wrk); the drills here use
bench/load.py's clients, which tag every request to check it afterwards.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.infra import (
    FakeProviderProcess,
    Gunicorn,
    PrivateMariaDB,
    cpu_seconds,
    machine_busy_seconds,
    manage,
    query,
    reconcile,
    service_env,
)
from bench.load import Connection, Request, Sample, run_load

Figures = dict[str, float | str]  # numbers get medians over runs; text is shown as seen

CHARGES_PATH = "/api/v1/charges"
WARM_UP_S = 2.0


@dataclass(frozen=True)
class Durations:
    restart_load_s: float

    @classmethod
    def for_mode(cls, *, quick: bool) -> Durations:
        if quick:
            return cls(restart_load_s=8)
        return cls(restart_load_s=12)


@dataclass
class Bench:
    provider: FakeProviderProcess
    database_url: str
    database_port: int
    database_name: str
    token: str
    log_dir: Path
    durations: Durations
    run_id: str
    concurrency: int = 32

    @property
    def latency_s(self) -> float:
        return self.provider.latency_ms / 1000

    @property
    def littles_bound_per_s(self) -> float:
        """At most C requests in flight, each at least one provider latency long."""
        return self.concurrency / self.latency_s

    def env(self, database_url: str | None = None, **overrides: str) -> dict[str, str]:
        return service_env(
            database_url=database_url or self.database_url, provider=self.provider, **overrides
        )

    def gunicorn(self, name: str, env: dict[str, str] | None = None) -> Gunicorn:
        return Gunicorn(env=env or self.env(), log_path=self.log_dir / f"gunicorn-{name}.log")

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Token {token or self.token}"}

    def charge(
        self, scenario: str, number: int, source: str = "tok_visa", token: str | None = None
    ) -> Request:
        body = {"amount": 1999, "currency": "USD", "source": source, "description": f"bench {scenario}"}
        key = f"{scenario}-{self.run_id}-{number}"
        headers = {**self.auth(token), "Content-Type": "application/json", "Idempotency-Key": key}
        return Request("POST", CHARGES_PATH, json.dumps(body).encode(), headers, tag=key)

    def charges(
        self, scenario: str, source: str = "tok_visa", token: str | None = None
    ) -> Callable[[int], Request]:
        return lambda number: self.charge(scenario, number, source, token)

    def max_charges(self, duration_s: float) -> int:
        return int(self.littles_bound_per_s * duration_s * 2) + 100

    def warm_up(self, server: Gunicorn, token: str | None = None) -> None:
        """Every worker has loaded its code, opened its pool and its provider connections."""
        run_load(
            base_url=server.url,
            make_request=self.charges(f"warmup-{server.port}", token=token),
            concurrency=self.concurrency,
            max_requests=self.max_charges(WARM_UP_S),
            max_duration_s=WARM_UP_S,
        )


@dataclass
class CpuMeter:
    """CPU seconds over a block: the server, the fake provider, MariaDB and the whole machine.

    MariaDB may be shared with other work; so is the machine. Both are context, not the server's cost.
    """

    server: Gunicorn
    provider: FakeProviderProcess
    database_pid: int | None
    server_s: float = 0.0
    provider_s: float = 0.0
    database_s: float = 0.0
    machine_busy_fraction: float = 0.0

    def _provider_cpu_s(self) -> float:
        return cpu_seconds(self.provider.process.pid) if self.provider.process else 0.0

    def _database_cpu_s(self) -> float:
        return cpu_seconds(self.database_pid) if self.database_pid else 0.0

    def __enter__(self) -> CpuMeter:
        self._started = (self.server.cpu_seconds(), self._provider_cpu_s(), self._database_cpu_s())
        self._machine0 = machine_busy_seconds()
        return self

    def __exit__(self, *exc_info: object) -> None:
        server0, provider0, database0 = self._started
        self.server_s = self.server.cpu_seconds() - server0
        self.provider_s = self._provider_cpu_s() - provider0
        self.database_s = self._database_cpu_s() - database0
        busy1, total1 = machine_busy_seconds()
        busy0, total0 = self._machine0
        self.machine_busy_fraction = (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0


def _in_list(keys: list[str]) -> str:
    # The keys are the bench's own ("<scenario>-<run>-<n>"), never outside input.
    return ",".join(f"'{key}'" for key in keys)


def _statuses_by_key(bench: Bench, keys: list[str]) -> dict[str, str]:
    if not keys:
        return {}
    rows = query(
        port=bench.database_port,
        database=bench.database_name,
        sql="SELECT idempotency_key, status FROM payments_transaction "
        f"WHERE idempotency_key IN ({_in_list(keys)})",
    )
    return dict(rows)


def killed_worker(bench: Bench, in_flight: int = 4) -> Figures:
    """SIGKILL every worker while charges wait on the provider; reconcile_payments settles them."""
    with bench.gunicorn("killed") as server:
        bench.warm_up(server)
        requests = [bench.charge("killed", number, source="tok_timeout") for number in range(in_flight)]
        keys = [request.tag for request in requests]
        statuses: list[int] = []
        senders = [
            threading.Thread(target=lambda r=request: statuses.append(Connection(server.url).send(r)[0]))
            for request in requests
        ]
        for sender in senders:
            sender.start()
        _wait_for(lambda: _charged_pending(bench, keys) == in_flight, timeout_s=10)
        killed_at = time.monotonic()
        killed = set(server.kill_workers())
        for sender in senders:
            sender.join(timeout=30)
        _wait_for(lambda: not killed & set(server.worker_pids()), timeout_s=30)
        server.wait_for_workers()
        respawn_s = time.monotonic() - killed_at
        time.sleep(1.2)  # older than the 1 s in-flight window
        summary = reconcile(env=bench.env(), after_s=1)
        settled = _statuses_by_key(bench, keys)
        ledger = bench.provider.ledger()
        provider_keys = dict(
            query(
                port=bench.database_port,
                database=bench.database_name,
                sql="SELECT idempotency_key, provider_idempotency_key FROM payments_transaction "
                f"WHERE idempotency_key LIKE 'killed-{bench.run_id}-%'",
            )
        )
        replays = [Connection(server.url).send(request)[0] for request in requests]
        ledger_after = bench.provider.ledger()
    agree = sum(
        1 for key in keys if settled.get(key) == "succeeded" and ledger.get(provider_keys.get(key, "")) == 1
    )
    return {
        "in_flight": in_flight,
        "cut_connections": statuses.count(0),
        "respawn_s": respawn_s,
        "reconciled": summary["total"],
        "settled_agreeing": agree,
        "replayed_201": replays.count(201),
        "charged_again": sum(ledger_after.values()) - sum(ledger.values()),
    }


def _charged_pending(bench: Bench, keys: list[str]) -> int:
    """Rows still pending whose charge the provider has already made."""
    rows = query(
        port=bench.database_port,
        database=bench.database_name,
        sql="SELECT provider_idempotency_key FROM payments_transaction "
        f"WHERE status = 'pending' AND idempotency_key IN ({_in_list(keys)})",
    )
    ledger = bench.provider.ledger()
    return sum(1 for (provider_key,) in rows if ledger.get(provider_key) == 1)


def _wait_for(condition: Callable[[], bool], *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"condition not met within {timeout_s} s")
        time.sleep(0.05)


def database_restart(
    bench: Bench, *, concurrency: int = 8, down_at_s: float = 3.0, down_for_s: float = 1.0
) -> Figures:
    """MariaDB (its own instance) restarted mid-run; then reconcile, client retries and the ledger check."""
    database = "paymentsite_restart"
    with PrivateMariaDB() as mariadb:
        query(port=mariadb.port, database="mysql", sql=f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
        env = bench.env(database_url=mariadb.url(database))
        manage("migrate", "--noinput", env=env)
        token = manage("create_api_client", "restart", env=env).stdout.strip()
        with bench.gunicorn("restart", env) as server:
            bench.warm_up(server, token=token)
            outage: dict[str, float] = {}

            def restart() -> None:
                time.sleep(down_at_s)
                outage["down"] = time.monotonic()
                mariadb.stop()
                time.sleep(down_for_s)
                mariadb.start()
                outage["ready"] = time.monotonic()

            restarter = threading.Thread(target=restart)
            restarter.start()
            orders = run_load(
                base_url=server.url,
                make_request=bench.charges("restart", token=token),
                concurrency=concurrency,
                max_requests=bench.max_charges(bench.durations.restart_load_s),
                max_duration_s=bench.durations.restart_load_s,
            )
            restarter.join()
            failed = [s for s in orders.samples if s.status != 201]
            time.sleep(1.2)  # older than the 1 s in-flight window
            summary = reconcile(env=env, after_s=1)
            # A client retries each failed order once, with the same Idempotency-Key.
            retry = Connection(server.url)
            retried = [retry.send(s.request)[0] for s in failed]
            retry.close()
        rows = query(
            port=mariadb.port,
            database=database,
            sql="SELECT idempotency_key, provider_idempotency_key, status FROM payments_transaction "
            f"WHERE idempotency_key LIKE 'restart-{bench.run_id}-%'",
        )
    ledger = bench.provider.ledger()
    order_keys = {s.request.tag for s in orders.samples}
    succeeded = {key for key, _, status in rows if status == "succeeded"}
    charged = {key for key, provider_key, _ in rows if ledger.get(provider_key) == 1}
    ready_s = outage["ready"] - orders.started_at
    failure_ends = [s.ended_s for s in failed]
    return {
        "orders": len(order_keys),
        "failed_during_outage": len(failed),
        "failed_by_status": _status_summary(failed),
        "outage_s": outage["ready"] - outage["down"],
        "recovery_s": max(0.0, max(failure_ends, default=0.0) - ready_s),
        "reconciled": summary["total"],
        "retried_201": retried.count(201),
        "orders_charged_once": len(order_keys & charged & succeeded),
        "lost": len((charged - succeeded) | (order_keys - {key for key, _, _ in rows})),
        "succeeded_not_charged": len(succeeded - charged),
    }


def _status_summary(samples: list[Sample]) -> str:
    """For example "500 x3, 503 x1"; status 0 is a cut connection."""
    counts = Counter(s.status for s in samples)
    return ", ".join(f"{status} x{count}" for status, count in sorted(counts.items())) or "none"
