"""`make bench` (`QUICK=1` for a short run): the scenarios against MariaDB-backed gunicorn.

    .venv/bin/python -m bench.run [--quick] [--runs N] [--output bench/results/latest.md]

Starts the fake provider (100 ms latency) and, per scenario, gunicorn with the shipped
config on its own database `paymentsite_bench` in the MariaDB at BENCH_DB_HOST:BENCH_DB_PORT
(127.0.0.1:3306, root, no password by default; the database is dropped and recreated).
The database-restart scenario starts a MariaDB instance of its own instead. Prints the
table and writes it, with the command, machine and date, to the output file.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import MySQLdb

from bench import scenarios
from bench.infra import ROOT, FakeProviderProcess, manage, mysql_url, recreate_database, service_env
from bench.scenarios import Bench, Durations, Figures

DATABASE_NAME = "paymentsite_bench"
PROVIDER_LATENCY_MS = 100
CONCURRENCY = 32
HEALTH_P99_AIM_MS = 50


def median_figures(runs: list[Figures]) -> Figures:
    merged: Figures = {}
    for name in runs[0]:
        values = [run[name] for run in runs if name in run]
        if all(isinstance(value, int | float) for value in values):
            numbers = [float(v) for v in values if not math.isnan(float(v))]
            merged[name] = statistics.median(numbers) if numbers else math.nan
        else:
            merged[name] = " / ".join(dict.fromkeys(str(value) for value in values))
    return merged


def _n(value: float | str, digits: int = 0) -> str:
    if isinstance(value, str):
        return value
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def _yes(condition: bool) -> str:
    return "yes" if condition else "**no**"


def table(results: dict[str, Figures], *, concurrency: int, latency_ms: int) -> str:
    bound = concurrency / (latency_ms / 1000)
    rows = ["| Scenario | Result (median of runs) | Aim | Met |", "|---|---|---|---|"]
    steady, floor = results.get("steady"), results.get("floor")
    if steady:
        cpu_bound = steady["cpu_ceiling_per_s"] < bound
        met = steady["littles_fraction"] >= 0.85
        of_ceiling = steady["throughput_per_s"] / min(bound, steady["cpu_ceiling_per_s"])
        rows.append(
            f"| Steady (C={concurrency}, provider {latency_ms} ms) "
            f"| {_n(steady['throughput_per_s'])} charges/s = **{_n(steady['littles_fraction'], 2)}** of the "
            f"bound C/latency ({_n(bound)}/s); p50 {_n(steady['p50_ms'])} ms, p99 {_n(steady['p99_ms'])} ms; "
            f"server CPU {_n(steady['server_cpu_ms_per_charge'], 1)} ms/charge; peak RSS "
            f"{_n(steady['peak_rss_mib_per_worker'])} MiB/worker; machine CPU busy "
            f"{_n(steady['machine_busy'] * 100)}%; CPU ceiling {_n(steady['cpu_ceiling_per_s'])} charges/s "
            f"(reached {_n(of_ceiling, 2)}); errors {_n(steady['errors'])} "
            f"| ≥ 0.85 of the bound unless CPU-bound "
            f"| {'yes' if met else 'CPU-bound: see the ceiling' if cpu_bound else '**no**'} |"
        )
    if floor:
        rows.append(
            f"| Framework floor (`GET {scenarios.FLOOR_PATH}`, empty page) "
            f"| {_n(floor['throughput_per_s'])} req/s; server CPU "
            f"{_n(floor['server_cpu_ms_per_request'], 1)} ms/request; "
            f"a charge costs **{_n(floor['charge_cpu_ratio'], 1)}×** the floor "
            f"| charge ≤ 3× floor | {_yes(floor['charge_cpu_ratio'] <= 3)} |"
        )
    small = results.get("small_pool")
    if small:
        rows.append(
            f"| Small pool (DB_CONNECTION_LIMIT=2 per worker, C={concurrency}) "
            f"| {_n(small['throughput_per_s'])} charges/s = **{_n(small['steady_ratio'], 2)}** of Steady; "
            f"503s: **{_n(small['status_503'])}**; other errors {_n(small['errors'] - small['status_503'])}; "
            f"p99 {_n(small['p99_ms'])} ms "
            f"| 0 × 503, ≥ 0.90 of Steady "
            f"| {_yes(small['status_503'] == 0 and small['steady_ratio'] >= 0.9)} |"
        )
    hang = results.get("hang")
    if hang:
        rows.append(
            f"| Provider hang (every charge `tok_timeout`) "
            f"| breaker open after {_n(hang['breaker_open_s'], 1)} s; "
            f"{_n(hang['rejected'])} charges rejected (503 circuit_open), "
            f"p99 {_n(hang['rejected_p99_ms'], 1)} ms; {_n(hang['timed_out'])} timed out; "
            f"`/health/` p50 {_n(hang['health_p50_ms'], 1)} ms, **p99 {_n(hang['health_p99_ms'], 1)} ms**, "
            f"max {_n(hang['health_max_ms'])} ms; timed-out charges found succeeded by reconcile_payments: "
            f"{_n(hang['timed_out_settled_succeeded'])}/{_n(hang['timed_out'])} "
            f"| health p99 < {HEALTH_P99_AIM_MS} ms "
            f"| {_yes(hang['health_p99_ms'] < HEALTH_P99_AIM_MS)} |"
        )
    restart = results.get("restart")
    if restart:
        agrees = restart["lost"] == 0 and restart["succeeded_not_charged"] == 0
        agrees = agrees and restart["orders_charged_once"] == restart["orders"]
        rows.append(
            f"| Database restart (own MariaDB, down {_n(restart['outage_s'], 1)} s) "
            f"| {_n(restart['failed_during_outage'])} of {_n(restart['orders'])} requests failed "
            f"({restart['failed_by_status']}); recovered {_n(restart['recovery_s'], 1)} s after the database "
            f"was back; reconcile_payments settled {_n(restart['reconciled'])}; after client retries "
            f"**{_n(restart['orders_charged_once'])}/{_n(restart['orders'])}** orders charged exactly once, "
            f"lost {_n(restart['lost'])}, succeeded-but-not-charged {_n(restart['succeeded_not_charged'])} "
            f"| nothing lost, nothing charged twice | {_yes(agrees)} |"
        )
    killed = results.get("killed")
    if killed:
        settled = killed["settled_agreeing"] == killed["in_flight"] and killed["charged_again"] == 0
        rows.append(
            f"| Killed worker (SIGKILL with {_n(killed['in_flight'])} charges in flight) "
            f"| workers back in {_n(killed['respawn_s'], 1)} s; reconcile_payments settled "
            f"**{_n(killed['settled_agreeing'])}/{_n(killed['in_flight'])}** as succeeded, agreeing with the "
            f"provider; client retries replayed {_n(killed['replayed_201'])}/{_n(killed['in_flight'])}; "
            f"charged again: {_n(killed['charged_again'])} "
            f"| every pending charge settled correctly | {_yes(settled)} |"
        )
    return "\n".join(rows)


def measurement_notes(results: dict[str, Figures]) -> str:
    steady = results.get("steady")
    if not steady:
        return ""
    return (
        "CPU per charge in Steady, beside the server's: MariaDB "
        f"{_n(steady['database_cpu_ms_per_charge'], 2)} ms, fake provider "
        f"{_n(steady['provider_cpu_ms_per_charge'], 2)} ms, load generator "
        f"{_n(steady['client_cpu_ms_per_charge'], 2)} ms; all share the same cores."
    )


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, "
        f"{memory_kib / 1024 / 1024:.0f} GiB RAM; load average at start {load}; Python "
        f"{platform.python_version()}"
    )


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def report(
    *, table_md: str, notes: str, command: str, runs: int, started: datetime, machine_line: str
) -> str:
    return "\n".join(
        [
            "# Benchmark: latest results",
            "",
            f"- Command: `{command}`",
            f"- Machine: {machine_line}",
            f"- Date: {started:%Y-%m-%d %H:%M} UTC; commit {_git_commit()}; "
            f"{runs} run(s) per scenario, medians",
            "",
            table_md,
            "",
            notes,
            "",
        ]
    )


SCENARIO_ORDER = ("steady", "small_pool", "killed", "hang", "restart")


def run_once(bench: Bench, only: set[str]) -> dict[str, Figures]:
    results: dict[str, Figures] = {}
    steps: list[tuple[str, Callable[[], None]]] = [
        ("steady", lambda: results.update(scenarios.steady_and_floor(bench))),
        (
            "small_pool",
            lambda: results.update(
                small_pool=scenarios.small_pool(
                    bench, results.get("steady", {}).get("throughput_per_s", math.nan)
                )
            ),
        ),
        ("killed", lambda: results.update(killed=scenarios.killed_worker(bench))),
        ("hang", lambda: results.update(hang=scenarios.provider_hang(bench))),
        ("restart", lambda: results.update(restart=scenarios.database_restart(bench))),
    ]
    for name, step in steps:
        if name in only:
            started = time.monotonic()
            print(f"  {name} …", end="", flush=True, file=sys.stderr)
            step()
            print(f" {time.monotonic() - started:.0f} s", file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="Short scenarios, one run.")
    parser.add_argument("--runs", type=int, help="Runs per scenario (default 3, or 1 with --quick).")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIO_ORDER),
        help=f"Comma-separated subset of {', '.join(SCENARIO_ORDER)}.",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "latest.md")
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if unknown := only - set(SCENARIO_ORDER):
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    runs = args.runs or (1 if args.quick else 3)
    command = (
        "make bench" + (" QUICK=1" if args.quick else "")
        if os.environ.get("MAKELEVEL")
        else shlex.join(["python", "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])])
    )
    started = datetime.now(UTC)
    machine_line = machine()

    db_host = os.environ.get("BENCH_DB_HOST", "127.0.0.1")
    db_port = int(os.environ.get("BENCH_DB_PORT", "3306"))
    log_dir = Path(tempfile.mkdtemp(prefix="paymentsite-bench-"))
    print(f"Logs: {log_dir}", file=sys.stderr)
    try:
        recreate_database(host=db_host, port=db_port, database=DATABASE_NAME)
    except MySQLdb.OperationalError as exc:
        raise SystemExit(
            f"The benchmark needs MariaDB at {db_host}:{db_port} (root, no password; BENCH_DB_HOST and "
            f"BENCH_DB_PORT choose another): {exc}"
        ) from None
    database_url = mysql_url(host=db_host, port=db_port, database=DATABASE_NAME)

    all_runs: list[dict[str, Figures]] = []
    with FakeProviderProcess(
        latency_ms=PROVIDER_LATENCY_MS, log_path=log_dir / "fake-provider.log"
    ) as provider:
        env = service_env(database_url=database_url, provider=provider)
        manage("migrate", "--noinput", env=env)
        token = manage("create_api_client", "bench", env=env).stdout.strip()
        for run_number in range(1, runs + 1):
            print(f"Run {run_number} of {runs}", file=sys.stderr)
            bench = Bench(
                provider=provider,
                database_url=database_url,
                database_port=db_port,
                database_name=DATABASE_NAME,
                token=token,
                log_dir=log_dir,
                durations=Durations.for_mode(quick=args.quick),
                run_id=uuid.uuid4().hex[:8],
                concurrency=CONCURRENCY,
            )
            all_runs.append(run_once(bench, only))

    medians = {name: median_figures([run[name] for run in all_runs]) for name in all_runs[0]}
    table_md = table(medians, concurrency=CONCURRENCY, latency_ms=PROVIDER_LATENCY_MS)
    text = report(
        table_md=table_md,
        notes=measurement_notes(medians),
        command=command,
        runs=runs,
        started=started,
        machine_line=machine_line,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    print(f"Written to {args.output}; logs in {log_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
