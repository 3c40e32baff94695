"""The service against the raw floor (bench/floor.py), side by side in one run, with load from wrk.

On a MariaDB of the benchmark's own (PrivateMariaDB), so that its statement counters and its
CPU time are this run's alone. In order:

- CPU-bound (40 connections, provider 100 ms): the service, then the floor on the same
  database and provider; throughput, server CPU per charge (the gunicorn processes' CPU time
  from /proc over charges served), statements per charge (SHOW GLOBAL STATUS, pings and
  pool resets included), peak RSS per worker;
- an authenticated GET of one charge and /health/live on the service, CPU per request;
- the small pool (DB_CONNECTION_LIMIT=2 per worker) under the same load as CPU-bound;
- open loop on the service: a constant arrival rate, then a step to 1.5 times it;
- latency-bound (16 connections, provider 200 ms): the service and the floor against the
  Little's-law bound.

Ratios are taken within the run. `profile_dir` set: py-spy records both service workers
under a further CPU-bound load (bench/profile.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import profile
from bench.infra import (
    FakeProviderProcess,
    FloorGunicorn,
    Gunicorn,
    PrivateMariaDB,
    StatementCounter,
    manage,
    peak_rss_mib,
    query,
    service_env,
)
from bench.scenarios import Bench, CpuMeter, Figures
from bench.wrk import WrkResult, run_wrk

DATABASE = "paymentsite_floor"
CPU_BOUND_CONNECTIONS = 40
LATENCY_BOUND_CONNECTIONS = 16
LATENCY_BOUND_PROVIDER_MS = 200
OPEN_LOOP_CONNECTIONS = 64
OPEN_LOOP_OF_CPU_BOUND = 0.6  # the default arrival rate, as a fraction of the service's CPU-bound throughput
OPEN_LOOP_STEP = 1.5
WARM_UP_S = 2.0


@dataclass(frozen=True)
class FloorDurations:
    cpu_bound_s: float
    read_s: float
    latency_bound_s: float
    open_loop_s: float
    profile_s: float

    @classmethod
    def for_mode(cls, *, quick: bool) -> FloorDurations:
        if quick:
            return cls(cpu_bound_s=5, read_s=3, latency_bound_s=5, open_loop_s=5, profile_s=8)
        return cls(cpu_bound_s=15, read_s=8, latency_bound_s=15, open_loop_s=20, profile_s=20)


@dataclass
class Measured:
    load: WrkResult
    server_cpu_s: float
    database_cpu_s: float
    provider_cpu_s: float
    machine_busy: float
    statements: dict[str, int]


class Runner:
    def __init__(self, bench: Bench, mariadb: PrivateMariaDB, token: str, counter: StatementCounter) -> None:
        self.bench, self.mariadb, self.token, self.counter = bench, mariadb, token, counter
        self.database_url = mariadb.url(DATABASE)

    def env(self, provider: FakeProviderProcess, **overrides: str) -> dict[str, str]:
        return service_env(
            database_url=self.database_url,
            provider=provider,
            FLOOR_DATABASE_URL=self.database_url,
            **overrides,
        )

    @contextlib.contextmanager
    def serve(self, name: str, server: Gunicorn, *, warm_up_connections: int) -> Iterator[Gunicorn]:
        with server:
            run_wrk(
                url=server.url,
                mode="charge",
                token=self.token,
                run_id=f"warmup-{name}-{self.bench.run_id}",
                connections=warm_up_connections,
                duration_s=WARM_UP_S,
            )
            yield server

    def measure(
        self,
        server: Gunicorn,
        provider: FakeProviderProcess,
        *,
        name: str,
        mode: str = "charge",
        path: str = "/",
        connections: int,
        duration_s: float,
        rate_per_s: float = 0.0,
    ) -> Measured:
        database_pid = self.mariadb.process.pid if self.mariadb.process else None
        before = self.counter.snapshot()
        with CpuMeter(server, provider, database_pid) as cpu:
            load = run_wrk(
                url=server.url + path,
                mode=mode,
                token=self.token,
                run_id=f"{name}-{self.bench.run_id}",
                connections=connections,
                duration_s=duration_s,
                rate_per_s=rate_per_s,
            )
        statements = StatementCounter.delta(before, self.counter.snapshot())
        return Measured(
            load, cpu.server_s, cpu.database_s, cpu.provider_s, cpu.machine_busy_fraction, statements
        )


def _per(value: float, count: int, scale: float = 1000.0) -> float:
    return value * scale / count if count else float("nan")


def _error_statuses(load: WrkResult) -> str:
    """For example "503 x5"; "none" when every answer was a 2xx."""
    errors = [
        f"{status} x{count}" for status, count in sorted(load.statuses.items()) if not 200 <= status < 300
    ]
    if load.socket_errors:
        errors.append(f"no answer x{load.socket_errors}")
    return ", ".join(errors) or "none"


def _charge_figures(measured: Measured, *, server: Gunicorn) -> Figures:
    load = measured.load
    served = load.count(201)
    answered = load.requests
    figures: Figures = {
        "throughput_per_s": load.throughput(201),
        "errors": load.errors,
        "error_statuses": _error_statuses(load),
        "p50_ms": load.p50_ms,
        "p99_ms": load.p99_ms,
        "server_cpu_ms_per_charge": _per(measured.server_cpu_s, served),
        "database_cpu_ms_per_charge": _per(measured.database_cpu_s, served),
        "provider_cpu_ms_per_charge": _per(measured.provider_cpu_s, served),
        "client_cpu_ms_per_charge": _per(load.client_cpu_s, served),
        "machine_busy": measured.machine_busy,
        "statements_per_charge": _per(measured.statements["Questions"], answered, 1),
        "pings_per_charge": _per(measured.statements["Com_admin_commands"], answered, 1),
        "statements": ", ".join(
            f"{name.removeprefix('Com_')} {_per(count, answered, 1):.2f}"
            for name, count in measured.statements.items()
            if name.startswith("Com_") and count
        ),
        "peak_rss_mib_per_worker": max((peak_rss_mib(pid) for pid in server.worker_pids()), default=0.0),
    }
    return figures


def _read_figures(measured: Measured) -> Figures:
    load = measured.load
    return {
        "throughput_per_s": load.throughput(200),
        "errors": load.errors,
        "server_cpu_ms_per_request": _per(measured.server_cpu_s, load.count(200)),
        "p50_ms": load.p50_ms,
    }


def _open_loop_figures(measured: Measured, rate_per_s: float) -> Figures:
    load = measured.load
    return {
        "rate_per_s": rate_per_s,
        "throughput_per_s": load.throughput(201),
        "p50_ms": load.p50_ms,
        "p99_ms": load.p99_ms,
        "max_ms": load.max_ms,
        "errors": load.errors,
        "status_503": load.count(503),
        "late_sends": load.late_sends,
        "late_max_ms": load.late_max_ms,
        "server_cpu_ms_per_charge": _per(measured.server_cpu_s, load.count(201)),
    }


def versus_floor(
    bench: Bench,
    *,
    quick: bool,
    small_pool: bool = True,
    open_rate_per_s: float | None = None,
    profile_dir: Path | None = None,
) -> dict[str, Figures]:
    durations = FloorDurations.for_mode(quick=quick)
    results: dict[str, Figures] = {}
    provider = bench.provider
    with PrivateMariaDB() as mariadb:
        query(port=mariadb.port, database="mysql", sql=f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")
        setup_env = service_env(database_url=mariadb.url(DATABASE), provider=provider)
        manage("migrate", "--noinput", env=setup_env)
        token = manage("create_api_client", "floor", env=setup_env).stdout.strip()
        counter = StatementCounter(port=mariadb.port)
        runner = Runner(bench, mariadb, token, counter)
        try:
            _cpu_bound(runner, provider, durations, results, open_rate_per_s, profile_dir)
            if small_pool:
                _small_pool(runner, provider, durations, results)
            _latency_bound(runner, durations, results)
        finally:
            counter.close()
    return results


def _log(bench: Bench, name: str) -> Path:
    return bench.log_dir / f"gunicorn-{name}.log"


def _cpu_bound(
    runner: Runner,
    provider: FakeProviderProcess,
    durations: FloorDurations,
    results: dict[str, Figures],
    open_rate_per_s: float | None,
    profile_dir: Path | None,
) -> None:
    bench = runner.bench
    env = runner.env(provider)
    service = Gunicorn(env=env, log_path=_log(bench, "service"))
    with runner.serve("service", service, warm_up_connections=CPU_BOUND_CONNECTIONS):
        charges = runner.measure(
            service,
            provider,
            name="service",
            connections=CPU_BOUND_CONNECTIONS,
            duration_s=durations.cpu_bound_s,
        )
        results["cpu_bound"] = _charge_figures(charges, server=service)
        (charge_id,) = query(
            port=runner.mariadb.port, database=DATABASE, sql="SELECT id FROM payments_transaction LIMIT 1"
        )[0]
        read = runner.measure(
            service,
            provider,
            name="get",
            mode="get",
            path=f"/api/v1/charges/{charge_id}",
            connections=CPU_BOUND_CONNECTIONS,
            duration_s=durations.read_s,
        )
        live = runner.measure(
            service,
            provider,
            name="live",
            mode="get",
            path="/health/live",
            connections=CPU_BOUND_CONNECTIONS,
            duration_s=durations.read_s,
        )
        results["reads"] = {
            **{f"get_{k}": v for k, v in _read_figures(read).items()},
            **{f"live_{k}": v for k, v in _read_figures(live).items()},
        }
        rate = open_rate_per_s or max(
            5.0, round(OPEN_LOOP_OF_CPU_BOUND * charges.load.throughput(201) / 5) * 5
        )
        for label, rate_per_s in (("open_loop", rate), ("open_loop_step", rate * OPEN_LOOP_STEP)):
            measured = runner.measure(
                service,
                provider,
                name=label,
                connections=OPEN_LOOP_CONNECTIONS,
                duration_s=durations.open_loop_s,
                rate_per_s=rate_per_s,
            )
            results[label] = _open_loop_figures(measured, rate_per_s)
        if profile_dir is not None:
            results["profile"] = profile.record_workers(
                service,
                lambda: run_wrk(
                    url=service.url,
                    mode="charge",
                    token=runner.token,
                    run_id=f"profile-{bench.run_id}",
                    connections=CPU_BOUND_CONNECTIONS,
                    duration_s=durations.profile_s,
                ),
                duration_s=durations.profile_s - 2,
                output_dir=profile_dir,
            )

    floor = FloorGunicorn(env=env, log_path=_log(bench, "floor"))
    with runner.serve("floor", floor, warm_up_connections=CPU_BOUND_CONNECTIONS):
        measured = runner.measure(
            floor, provider, name="floor", connections=CPU_BOUND_CONNECTIONS, duration_s=durations.cpu_bound_s
        )
        results["floor_cpu_bound"] = _charge_figures(measured, server=floor)
    service_figures, floor_figures = results["cpu_bound"], results["floor_cpu_bound"]
    service_figures["cpu_ratio"] = float(service_figures["server_cpu_ms_per_charge"]) / float(
        floor_figures["server_cpu_ms_per_charge"]
    )
    service_figures["throughput_ratio"] = float(service_figures["throughput_per_s"]) / float(
        floor_figures["throughput_per_s"]
    )
    reads = results["reads"]
    reads["get_live_cpu_ratio"] = float(reads["get_server_cpu_ms_per_request"]) / float(
        reads["live_server_cpu_ms_per_request"]
    )
    # What the two cores could serve at this run's whole CPU cost per charge (server, MariaDB,
    # provider and wrk all run on them).
    for figures in (service_figures, floor_figures):
        total_ms = sum(
            float(figures[name])
            for name in (
                "server_cpu_ms_per_charge",
                "database_cpu_ms_per_charge",
                "provider_cpu_ms_per_charge",
                "client_cpu_ms_per_charge",
            )
        )
        figures["cpu_ceiling_per_s"] = (os.cpu_count() or 1) * 1000 / total_ms
        figures["of_ceiling"] = float(figures["throughput_per_s"]) / figures["cpu_ceiling_per_s"]


def _small_pool(
    runner: Runner, provider: FakeProviderProcess, durations: FloorDurations, results: dict[str, Figures]
) -> None:
    """Two connections per worker for 32 threads: enough only if none is held across the provider call."""
    env = runner.env(provider, DB_CONNECTION_LIMIT="2", DB_MAX_OVERFLOW="0")
    server = Gunicorn(env=env, log_path=_log(runner.bench, "small-pool"))
    with runner.serve("small-pool", server, warm_up_connections=CPU_BOUND_CONNECTIONS):
        measured = runner.measure(
            server,
            provider,
            name="small-pool",
            connections=CPU_BOUND_CONNECTIONS,
            duration_s=durations.cpu_bound_s,
        )
    load = measured.load
    results["small_pool"] = {
        "throughput_per_s": load.throughput(201),
        "cpu_bound_ratio": load.throughput(201) / float(results["cpu_bound"]["throughput_per_s"]),
        "status_503": load.count(503),
        "errors": load.errors,
        "p99_ms": load.p99_ms,
    }


def _latency_bound(runner: Runner, durations: FloorDurations, results: dict[str, Figures]) -> None:
    bench = runner.bench
    bound = LATENCY_BOUND_CONNECTIONS / (LATENCY_BOUND_PROVIDER_MS / 1000)
    with FakeProviderProcess(
        latency_ms=LATENCY_BOUND_PROVIDER_MS, log_path=bench.log_dir / "fake-provider-200ms.log"
    ) as slow:
        env = runner.env(slow)
        for name, server in (
            ("latency_bound", Gunicorn(env=env, log_path=_log(bench, "latency-bound"))),
            ("floor_latency_bound", FloorGunicorn(env=env, log_path=_log(bench, "floor-latency-bound"))),
        ):
            with runner.serve(name, server, warm_up_connections=LATENCY_BOUND_CONNECTIONS):
                measured = runner.measure(
                    server,
                    slow,
                    name=name,
                    connections=LATENCY_BOUND_CONNECTIONS,
                    duration_s=durations.latency_bound_s,
                )
            load = measured.load
            results[name] = {
                "throughput_per_s": load.throughput(201),
                "bound_per_s": bound,
                "littles_fraction": load.throughput(201) / bound,
                "p50_ms": load.p50_ms,
                "p50_over_provider_ms": load.p50_ms - LATENCY_BOUND_PROVIDER_MS,
                "p99_ms": load.p99_ms,
                "errors": load.errors,
            }
