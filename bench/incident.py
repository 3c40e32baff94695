"""Under the incident (the provider hangs) and a spike, with load from wrk, on a MariaDB of the bench's own.

On its own MariaDB (PrivateMariaDB), so that the statement counters are these requests' alone,
and with wrk (bench/wrk.lua) rather than Python threads on the same two cores:

- **hang**: every charge hangs at the provider (`tok_timeout`), arriving at a fixed rate
  (open loop, `HANG_RATE_PER_S`) for `hang_s`, while a second wrk asks `GET /health/` at
  `HEALTH_RATE_PER_S` (open loop too); the health figures are that wrk's latency
  percentiles. The bulkhead fills, later charges wait `PAYMENT_SLOT_WAIT_MS` and are refused
  (503 `provider_busy`), the breaker opens when the first calls time out (503 `circuit_open`).
  Afterwards reconcile_payments must find every timed-out charge that the provider made.
- **refusal costs**, on a gunicorn of their own: the server's CPU per answer and MariaDB's
  writes (`Com_insert`, `Com_update`, `Com_delete`, `Com_commit`) per answer, for an
  authenticated GET of one charge (the read), then for refusals with the bulkhead held full
  by hanging charges (`provider_busy`, each after its slot wait), then for refusals with the
  breaker open (`circuit_open`). Closed loop, `COST_CONNECTIONS` connections; the ratios are
  the refusals' CPU over the read's, in the same run.
- **spike**: `SPIKE_CONNECTIONS` wrk connections, closed loop, provider 100 ms: more
  charges at once than the two workers' slots; the 503s and how busy the machine was.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bench.infra import (
    Gunicorn,
    PrivateMariaDB,
    StatementCounter,
    manage,
    query,
    reconcile,
    service_env,
)
from bench.load import Connection
from bench.scenarios import Bench, CpuMeter, Figures
from bench.wrk import WrkResult, run_wrk

DATABASE = "paymentsite_incident"
HANG = "tok_timeout"
HANG_RATE_PER_S = 50  # about half of this machine's CPU-bound charge throughput
HANG_CONNECTIONS = 96  # the 48 calls in slots, the slot waits and room to spare: no late sends
HEALTH_RATE_PER_S = 50
HEALTH_CONNECTIONS = 4
HEALTH_P99_AIM_MS = 20
COST_CONNECTIONS = 16
BUSY_WINDOW_S = 3  # well inside the first calls' first read timeout (PAYMENT_TIMEOUT_MS, 5 s)
SPIKE_CONNECTIONS = 64
WARM_UP_S = 2
IDLE_HEALTH_S = 3  # /health/ alone first, at the same rate: what the machine gives it without the incident
WRITES = ("Com_insert", "Com_update", "Com_delete", "Com_commit")


@dataclass(frozen=True)
class IncidentDurations:
    hang_s: float
    cost_s: float
    spike_s: float


# --quick's and the full run's; the hang outlasts the first calls' PAYMENT_DEADLINE_MS (10 s).
DURATIONS = {
    True: IncidentDurations(hang_s=15, cost_s=3, spike_s=5),
    False: IncidentDurations(hang_s=25, cost_s=6, spike_s=15),
}


@dataclass
class Cost:
    """One closed-loop wrk run's answers, the server's CPU over them and MariaDB's statements."""

    load: WrkResult
    answers: int
    server_cpu_ms: float
    writes: dict[str, int]

    def figures(self, prefix: str) -> Figures:
        per = self.answers or 1
        return {
            f"{prefix}_answers": self.answers,
            f"{prefix}_cpu_ms": self.server_cpu_ms / per,
            f"{prefix}_writes": sum(self.writes.values()) / per,
            f"{prefix}_statuses": _statuses(self.load),
        }


def _statuses(load: WrkResult) -> str:
    """For example "503 circuit_open x120"; the other answers by HTTP status."""
    parts = [f"{code} x{count}" for code, count in sorted(load.codes.items())]
    parts += [f"{status} x{count}" for status, count in sorted(load.statuses.items()) if status < 400]
    if load.socket_errors:
        parts.append(f"no answer x{load.socket_errors}")
    return ", ".join(parts) or "none"


class Incident:
    def __init__(
        self, bench: Bench, mariadb: PrivateMariaDB, token: str, durations: IncidentDurations
    ) -> None:
        self.bench, self.mariadb, self.token, self.durations = bench, mariadb, token, durations
        self.env = service_env(database_url=mariadb.url(DATABASE), provider=bench.provider)
        self.counter = StatementCounter(port=mariadb.port)

    def wrk(self, server: Gunicorn, name: str, **options: object) -> WrkResult:
        options.setdefault("mode", "charge")
        return run_wrk(
            url=server.url + str(options.pop("path", "/")),
            token=self.token,
            run_id=f"{name}-{self.bench.run_id}",
            **options,  # type: ignore[arg-type]
        )

    @contextlib.contextmanager
    def serve(self, name: str) -> Iterator[Gunicorn]:
        with Gunicorn(env=self.env, log_path=self.bench.log_dir / f"gunicorn-{name}.log") as server:
            self.wrk(server, f"warmup-{name}", connections=COST_CONNECTIONS, duration_s=WARM_UP_S)
            self.wait_settled()  # the charges wrk left in flight when it stopped
            yield server

    def meter(self, server: Gunicorn) -> CpuMeter:
        return CpuMeter(
            server, self.bench.provider, self.mariadb.process.pid if self.mariadb.process else None
        )

    def cost(self, server: Gunicorn, run: Callable[[], WrkResult], *, status: int) -> Cost:
        before = self.counter.snapshot()
        with self.meter(server) as cpu:
            load = run()
        statements = StatementCounter.delta(before, self.counter.snapshot())
        return Cost(
            load, load.count(status), cpu.server_s * 1000, {name: statements[name] for name in WRITES}
        )

    def rows(self, sql_where: str) -> int:
        return int(
            query(
                port=self.mariadb.port,
                database=DATABASE,
                sql=f"SELECT COUNT(*) FROM payments_transaction WHERE {sql_where}",
            )[0][0]
        )

    def wait_settled(self, timeout_s: float = 40.0) -> None:
        """No charge still pending: every call that took a slot has ended, so that a measurement
        after this one counts no write of theirs."""
        deadline = time.monotonic() + timeout_s
        while self.rows("status = 'pending'"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"charges still pending after {timeout_s} s")
            time.sleep(0.2)

    def health(self, server: Gunicorn, name: str, duration_s: float) -> WrkResult:
        return self.wrk(
            server,
            name,
            mode="get",
            path="/health/",
            connections=HEALTH_CONNECTIONS,
            duration_s=duration_s,
            rate_per_s=HEALTH_RATE_PER_S,
        )

    def close(self) -> None:
        self.counter.close()


def incident(bench: Bench, *, quick: bool, hang: bool = True, spike: bool = True) -> dict[str, Figures]:
    durations = DURATIONS[quick]
    results: dict[str, Figures] = {}
    with PrivateMariaDB() as mariadb:
        query(port=mariadb.port, database="mysql", sql=f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")
        setup_env = service_env(database_url=mariadb.url(DATABASE), provider=bench.provider)
        manage("migrate", "--noinput", env=setup_env)
        token = manage("create_api_client", "incident", env=setup_env).stdout.strip()
        runner = Incident(bench, mariadb, token, durations)
        try:
            if hang:
                results["hang"] = {**provider_hang(runner), **refusal_costs(runner)}
            if spike:
                results["spike"] = spike_scenario(runner)
        finally:
            runner.close()
    return results


def provider_hang(runner: Incident) -> Figures:
    """Charges that hang, at a fixed rate, beside /health/ at a fixed rate; then reconcile."""
    hang_s = runner.durations.hang_s
    with runner.serve("hang") as server:
        with runner.meter(server) as idle_cpu:
            idle = runner.health(server, "health-idle", IDLE_HEALTH_S)
        answers: dict[str, WrkResult] = {}
        health = threading.Thread(
            target=lambda: answers.update(health=runner.health(server, "health", hang_s))
        )
        with runner.meter(server) as cpu:
            health.start()
            charges = runner.wrk(
                server,
                "hang",
                connections=HANG_CONNECTIONS,
                duration_s=hang_s,
                rate_per_s=HANG_RATE_PER_S,
                source=HANG,
            )
            health.join()
        probes = answers["health"]
        # Charges that took a slot freed by the first calls to time out, before the breaker had
        # counted enough failures to open, may still wait on the provider after wrk stopped.
        runner.wait_settled()
        run = f"idempotency_key LIKE 'hang-{runner.bench.run_id}-%'"
        timed_out = runner.rows(f"{run} AND status = 'unknown'")
    time.sleep(1.2)  # older than the 1 s in-flight window
    summary = reconcile(env=runner.env, after_s=1)
    return {
        "rate_per_s": HANG_RATE_PER_S,
        "charges": charges.requests,
        "statuses": _statuses(charges),
        "provider_busy": charges.codes.get("provider_busy", 0),
        "circuit_open": charges.codes.get("circuit_open", 0),
        "timed_out": charges.count(504),
        "breaker_open_s": charges.first_code_ms.get("circuit_open", float("nan")) / 1000,
        "charge_late_sends": charges.late_sends,
        "machine_busy": cpu.machine_busy_fraction,
        "health_requests": probes.requests,
        "health_p50_ms": probes.p50_ms,
        "health_p90_ms": probes.p90_ms,
        "health_p99_ms": probes.p99_ms,
        "health_max_ms": probes.max_ms,
        "health_errors": probes.errors,
        "health_late_sends": probes.late_sends,
        "idle_health_p50_ms": idle.p50_ms,
        "idle_health_p99_ms": idle.p99_ms,
        "idle_machine_busy": idle_cpu.machine_busy_fraction,
        "health_cpu_ms": idle_cpu.server_s * 1000 / (idle.count(200) or 1),
        "reconciled": summary["total"],
        "unknown_before_reconcile": timed_out,
        "timed_out_settled_succeeded": runner.rows(f"{run} AND status = 'succeeded'"),
    }


def _hold_bulkhead(runner: Incident, server: Gunicorn, slots: int) -> list[threading.Thread]:
    """Hanging charges until `slots` of them hold a slot (a worker's share of new connections
    is the kernel's choice: the ones refused come back, and more are sent)."""
    senders: list[threading.Thread] = []
    held = f"idempotency_key LIKE 'fill-{runner.bench.run_id}-%' AND status = 'pending'"
    deadline = time.monotonic() + 10
    while runner.rows(held) < slots:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the bulkhead never filled ({runner.rows(held)} of {slots} slots)")
        for _ in range(slots - runner.rows(held) + 4):
            request = runner.bench.charge("fill", len(senders), source=HANG, token=runner.token)
            sender = threading.Thread(target=lambda r=request: Connection(server.url).send(r))
            sender.start()
            senders.append(sender)
        time.sleep(0.5)
    return senders


def refusal_costs(runner: Incident) -> Figures:
    """CPU and writes per answer: a read, a refusal with the bulkhead full, one with the breaker open."""
    cost_s = runner.durations.cost_s
    slots = 2 * int(runner.env.get("PAYMENT_MAX_CONCURRENT_CALLS", "24"))  # two workers
    with runner.serve("refusals") as server:
        (charge_id,) = query(
            port=runner.mariadb.port, database=DATABASE, sql="SELECT id FROM payments_transaction LIMIT 1"
        )[0]
        read = runner.cost(
            server,
            lambda: runner.wrk(
                server,
                "read",
                mode="get",
                path=f"/api/v1/charges/{charge_id}",
                connections=COST_CONNECTIONS,
                duration_s=cost_s,
            ),
            status=200,
        )
        senders = _hold_bulkhead(runner, server, slots)
        busy = runner.cost(
            server,
            lambda: runner.wrk(
                server, "busy", connections=COST_CONNECTIONS, duration_s=BUSY_WINDOW_S, source=HANG
            ),
            status=503,
        )
        for sender in senders:  # their calls time out; each worker's breaker opens
            sender.join(timeout=60)
        runner.wait_settled()
        open_ = runner.cost(
            server,
            lambda: runner.wrk(server, "open", connections=COST_CONNECTIONS, duration_s=cost_s, source=HANG),
            status=503,
        )
    figures = {**read.figures("read"), **busy.figures("busy"), **open_.figures("open")}
    figures["busy_read_cpu_ratio"] = float(figures["busy_cpu_ms"]) / float(figures["read_cpu_ms"])
    figures["open_read_cpu_ratio"] = float(figures["open_cpu_ms"]) / float(figures["read_cpu_ms"])
    figures["busy_writes_detail"] = ", ".join(f"{k.removeprefix('Com_')} {v}" for k, v in busy.writes.items())
    figures["open_writes_detail"] = ", ".join(
        f"{k.removeprefix('Com_')} {v}" for k, v in open_.writes.items()
    )
    return figures


def spike_scenario(runner: Incident) -> Figures:
    """More charges at once than the workers have slots; the slot wait should absorb them."""
    with runner.serve("spike") as server, runner.meter(server) as cpu:
        load = runner.wrk(server, "spike", connections=SPIKE_CONNECTIONS, duration_s=runner.durations.spike_s)
    return {
        "connections": SPIKE_CONNECTIONS,
        "charges": load.requests,
        "throughput_per_s": load.throughput(201),
        "status_503": load.count(503),
        "provider_busy": load.codes.get("provider_busy", 0),
        "statuses": _statuses(load),
        "errors": load.errors,
        "p50_ms": load.p50_ms,
        "p99_ms": load.p99_ms,
        "machine_busy": cpu.machine_busy_fraction,
        "server_cpu_ms_per_charge": cpu.server_s * 1000 / (load.count(201) or 1),
    }


def table_rows(results: dict[str, Figures], n: Callable[..., str], yes: Callable[[bool], str]) -> list[str]:
    """The hang's and the spike's rows of bench/run.py's table (`n` formats a number, `yes` a verdict)."""
    rows = []
    hang = results.get("hang")
    if hang:
        cheap = max(float(hang["busy_read_cpu_ratio"]), float(hang["open_read_cpu_ratio"])) <= 1
        refusals_met = cheap and hang["busy_writes"] == 0 and hang["open_writes"] == 0
        rows.append(
            f"| Provider hang (every charge `tok_timeout`, {n(hang['rate_per_s'])} charges/s arriving, "
            f"{HANG_CONNECTIONS} connections; `GET /health/` at {HEALTH_RATE_PER_S}/s beside) "
            f"| `/health/` p50 {n(hang['health_p50_ms'], 1)} ms, **p99 {n(hang['health_p99_ms'], 1)} ms**, "
            f"max {n(hang['health_max_ms'])} ms ({n(hang['health_requests'])} probes, errors "
            f"{n(hang['health_errors'])}, late sends {n(hang['health_late_sends'])}); the same probes "
            f"before the incident: p50 {n(hang['idle_health_p50_ms'], 1)} ms, p99 "
            f"{n(hang['idle_health_p99_ms'], 1)} ms, {n(hang['health_cpu_ms'], 1)} ms of server CPU each; "
            f"charges: {hang['statuses']} (late sends {n(hang['charge_late_sends'])}); breaker open after "
            f"{n(hang['breaker_open_s'], 1)} s; machine busy {n(hang['machine_busy'] * 100)}% "
            f"(before: {n(hang['idle_machine_busy'] * 100)}%); timed-out charges found succeeded by "
            f"reconcile_payments: {n(hang['timed_out_settled_succeeded'])}/"
            f"{n(hang['unknown_before_reconcile'])} "
            f"| health p99 ≤ {HEALTH_P99_AIM_MS} ms "
            f"| {yes(hang['health_p99_ms'] <= HEALTH_P99_AIM_MS)} |"
        )
        rows.append(
            f"| Refusals vs a read ({COST_CONNECTIONS} connections, closed loop): server CPU and "
            f"MariaDB writes (`Com_insert`+`update`+`delete`+`commit`) per answer "
            f"| read (authenticated `GET` of one charge) {n(hang['read_cpu_ms'], 2)} ms; "
            f"`provider_busy` (bulkhead full) {n(hang['busy_cpu_ms'], 2)} ms = "
            f"**{n(hang['busy_read_cpu_ratio'], 2)}×**, writes {n(hang['busy_writes'], 2)} per refusal "
            f"({hang['busy_writes_detail']}; {hang['busy_statuses']}); `circuit_open` "
            f"{n(hang['open_cpu_ms'], 2)} ms = **{n(hang['open_read_cpu_ratio'], 2)}×**, writes "
            f"{n(hang['open_writes'], 2)} per refusal ({hang['open_writes_detail']}; "
            f"{hang['open_statuses']}); the read's writes: {n(hang['read_writes'], 2)} per read "
            f"| ≤ 1× a read, 0 writes "
            f"| {yes(refusals_met)} |"
        )
    spike = results.get("spike")
    if spike:
        rows.append(
            f"| Spike ({n(spike['connections'])} connections, closed loop, provider 100 ms; "
            f"2 workers × 24 slots, `PAYMENT_SLOT_WAIT_MS` 200) "
            f"| {n(spike['throughput_per_s'])} charges/s; **503: {n(spike['status_503'])}** of "
            f"{n(spike['charges'])} ({spike['statuses']}); "
            f"machine busy **{n(spike['machine_busy'] * 100)}%**; "
            f"p50 {n(spike['p50_ms'])} ms, p99 {n(spike['p99_ms'])} ms "
            f"| no 503 while the CPU has room "
            f"| {yes(spike['status_503'] == 0)} |"
        )
    return rows
