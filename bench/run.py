"""`make bench` (`QUICK=1` for a short run): the scenarios against MariaDB-backed gunicorn.

    .venv/bin/python -m bench.run [--quick] [--runs N] [--only …] [--open-rate N] [--profile]
                                  [--output bench/results/latest.md]

`--only overhead` runs bench/overhead.py (one GET's CPU in-process, step by step) as a process of
its own and puts its figures in the table.

Starts the fake provider (100 ms latency) and, per scenario, gunicorn with the shipped
config. Load comes from wrk (bench/wrk.py) for the service-against-floor scenarios
(bench/versus_floor.py) and for the provider hang and the spike (bench/incident.py), which
run on MariaDB instances of their own, as the database-restart scenario does; the other
drill (killed worker) uses the database `paymentsite_bench` in the MariaDB at
BENCH_DB_HOST:BENCH_DB_PORT (127.0.0.1:3306, root, no password by default; the database is
dropped and recreated) and bench/load.py's threaded clients, which tag each request. Prints
the table and writes it, with the command, machine and date, to the output file. The
settle-latency runs (bench/settle_latency.py, `--only settle`) have a database of their own
there, `paymentsite_settle`.
"""

from __future__ import annotations

import argparse
import json
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import MySQLdb

from bench import incident, profile, scenarios, settle_latency, wrk
from bench.infra import ROOT, FakeProviderProcess, manage, mysql_url, recreate_database, service_env
from bench.scenarios import Bench, Durations, Figures
from bench.versus_floor import (
    CPU_BOUND_CONNECTIONS,
    LATENCY_BOUND_CONNECTIONS,
    LATENCY_BOUND_PROVIDER_MS,
    OPEN_LOOP_CONNECTIONS,
    versus_floor,
)

DATABASE_NAME = "paymentsite_bench"
PROVIDER_LATENCY_MS = 100
CONCURRENCY = 32


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


def table(results: dict[str, Figures]) -> str:
    rows = ["| Scenario | Result (median of runs) | Aim | Met |", "|---|---|---|---|"]
    service, floor = results.get("cpu_bound"), results.get("floor_cpu_bound")
    if service and floor:
        rows.append(
            f"| CPU per charge, service vs raw floor (`bench/floor.py`), {CPU_BOUND_CONNECTIONS} connections "
            f"| service {_n(service['server_cpu_ms_per_charge'], 2)} ms, floor "
            f"{_n(floor['server_cpu_ms_per_charge'], 2)} ms of server CPU per charge: "
            f"**{_n(service['cpu_ratio'], 1)}×** the floor "
            f"| ≤ 3× | {_yes(service['cpu_ratio'] <= 3)} |"
        )
        rows.append(
            f"| CPU-bound throughput ({CPU_BOUND_CONNECTIONS} connections, "
            f"provider {PROVIDER_LATENCY_MS} ms) "
            f"| service {_n(service['throughput_per_s'])} charges/s, "
            f"floor {_n(floor['throughput_per_s'])}/s: "
            f"**{_n(service['throughput_ratio'], 2)}** of the floor's; machine busy "
            f"{_n(service['machine_busy'] * 100)}% / {_n(floor['machine_busy'] * 100)}%; "
            f"{_n(service['of_ceiling'], 2)} of the service's CPU ceiling "
            f"({_n(service['cpu_ceiling_per_s'])}/s); p50 {_n(service['p50_ms'])} ms / "
            f"{_n(floor['p50_ms'])} ms, p99 {_n(service['p99_ms'])} ms / {_n(floor['p99_ms'])} ms; "
            f"errors: {service['error_statuses']} / {floor['error_statuses']} "
            f"| ≥ 0.75 of the floor's, ≥ 0.9 of the ceiling "
            f"| {_yes(service['throughput_ratio'] >= 0.75 and service['of_ceiling'] >= 0.9)} |"
        )
    reads = results.get("reads")
    if reads:
        rows.append(
            f"| Authenticated `GET` of one charge vs `/health/live`, CPU per request "
            f"| {_n(reads['get_server_cpu_ms_per_request'], 2)} ms vs "
            f"{_n(reads['live_server_cpu_ms_per_request'], 2)} ms: **{_n(reads['get_live_cpu_ratio'], 1)}×** "
            f"({_n(reads['get_throughput_per_s'])} and {_n(reads['live_throughput_per_s'])} req/s; errors "
            f"{_n(reads['get_errors'])} / {_n(reads['live_errors'])}) "
            f"| ≤ 3× | {_yes(reads['get_live_cpu_ratio'] <= 3)} |"
        )
    steps = results.get("overhead")
    if steps:
        rows.append(
            f"| In-process CPU of one GET vs `/health/live` (`bench/overhead.py`: one thread, no load) "
            f"| {_n(steps['get_us'])} µs vs {_n(steps['live_us'])} µs: "
            f"**{_n(steps['get_live_ratio'], 1)}×**; "
            f"largest steps: {steps['largest']} | reported | yes |"
        )
    latency, floor_latency = results.get("latency_bound"), results.get("floor_latency_bound")
    if latency:
        context = (
            f"; the floor: {_n(floor_latency['littles_fraction'], 2)} of the bound, p50 "
            f"+{_n(floor_latency['p50_over_provider_ms'])} ms"
            if floor_latency
            else ""
        )
        rows.append(
            f"| Latency-bound ({LATENCY_BOUND_CONNECTIONS} connections, "
            f"provider {LATENCY_BOUND_PROVIDER_MS} ms) "
            f"| {_n(latency['throughput_per_s'])} charges/s = "
            f"**{_n(latency['littles_fraction'], 2)}** of the "
            f"Little's-law bound ({_n(latency['bound_per_s'])}/s); p50 {_n(latency['p50_ms'])} ms = "
            f"**+{_n(latency['p50_over_provider_ms'])} ms** over the provider, "
            f"p99 {_n(latency['p99_ms'])} ms; "
            f"errors {_n(latency['errors'])}{context} "
            f"| ≥ 0.95 of the bound, p50 ≤ +10 ms "
            f"| {_yes(latency['littles_fraction'] >= 0.95 and latency['p50_over_provider_ms'] <= 10)} |"
        )
    for name, label in (("open_loop", "Open loop"), ("open_loop_step", "Open loop, step to 1.5×")):
        loop = results.get(name)
        if loop:
            rows.append(
                f"| {label} ({_n(loop['rate_per_s'])} charges/s arriving, "
                f"{OPEN_LOOP_CONNECTIONS} connections) "
                f"| served {_n(loop['throughput_per_s'])}/s; p50 {_n(loop['p50_ms'])} ms, "
                f"**p99 {_n(loop['p99_ms'])} ms**, max {_n(loop['max_ms'])} ms; errors {_n(loop['errors'])} "
                f"(503: {_n(loop['status_503'])}); late sends {_n(loop['late_sends'])} (worst "
                f"{_n(loop['late_max_ms'])} ms) "
                f"| reported; no late sends (no coordinated omission) | {_yes(loop['late_sends'] == 0)} |"
            )
    if service and floor:
        rows.append(
            f"| Statements per charge (MariaDB's `Questions`; pings are `Com_admin_commands`) "
            f"| service **{_n(service['statements_per_charge'], 1)}** ({service['statements']}) "
            f"+ {_n(service['pings_per_charge'], 2)} pings; "
            f"floor **{_n(floor['statements_per_charge'], 1)}** "
            f"({floor['statements']}) "
            f"| counted | yes |"
        )
        rows.append(
            f"| Peak RSS per worker "
            f"| service {_n(service['peak_rss_mib_per_worker'])} MiB, floor "
            f"{_n(floor['peak_rss_mib_per_worker'])} MiB | reported | yes |"
        )
    small = results.get("small_pool")
    if small:
        rows.append(
            f"| Small pool (DB_CONNECTION_LIMIT=2 per worker, {CPU_BOUND_CONNECTIONS} connections) "
            f"| {_n(small['throughput_per_s'])} charges/s = "
            f"**{_n(small['cpu_bound_ratio'], 2)}** of CPU-bound; "
            f"503s: **{_n(small['status_503'])}**; other errors {_n(small['errors'] - small['status_503'])}; "
            f"p99 {_n(small['p99_ms'])} ms "
            f"| 0 × 503, ≥ 0.90 of CPU-bound "
            f"| {_yes(small['status_503'] == 0 and small['cpu_bound_ratio'] >= 0.9)} |"
        )
    rows.extend(incident.table_rows(results, _n, _yes))
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
    rows.extend(settle_latency.table_rows(results))
    return "\n".join(rows)


def measurement_notes(results: dict[str, Figures]) -> str:
    service, floor = results.get("cpu_bound"), results.get("floor_cpu_bound")
    if not (service and floor):
        return ""

    def beside(figures: Figures) -> str:
        return (
            f"MariaDB {_n(figures['database_cpu_ms_per_charge'], 2)} ms, fake provider "
            f"{_n(figures['provider_cpu_ms_per_charge'], 2)} ms, "
            f"wrk {_n(figures['client_cpu_ms_per_charge'], 2)} ms"
        )

    return (
        f"CPU per charge in the CPU-bound runs, beside the server's: service: {beside(service)}; "
        f"floor: {beside(floor)}; all share the same two cores, with whatever else the machine runs. "
        "Load from wrk (bench/wrk.lua); the scenarios above the small pool run on a MariaDB of the "
        "benchmark's own, so its counters are theirs alone."
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


SCENARIO_ORDER = ("floor", "small_pool", "overhead", "killed", "hang", "spike", "restart", "settle")


def overhead_figures() -> Figures:
    """bench/overhead.py in a process of its own (it sets up Django; this process does not)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.overhead", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    # The middleware's own times and the view's steps; not "the view below the chain", their sum.
    steps = sorted([*figures["middleware"][:-1], *figures["steps"]], key=lambda step: -step[1])
    return {
        "get_us": figures["get_us"],
        "live_us": figures["live_us"],
        "get_live_ratio": figures["get_live_ratio"],
        "largest": "; ".join(f"{name} {us:,.0f} µs" for name, us in steps[:4]),
    }


@dataclass(frozen=True)
class Options:
    quick: bool = False
    open_rate_per_s: float | None = None
    profile_dir: Path | None = None


def run_once(bench: Bench, only: set[str], options: Options) -> dict[str, Figures]:
    results: dict[str, Figures] = {}
    steps: list[tuple[str, Callable[[], None]]] = [
        (
            "floor",  # and the small pool, on the same database and against the same CPU-bound run
            lambda: results.update(
                versus_floor(
                    bench,
                    quick=options.quick,
                    small_pool="small_pool" in only,
                    open_rate_per_s=options.open_rate_per_s,
                    profile_dir=options.profile_dir,
                )
            ),
        ),
        ("overhead", lambda: results.update(overhead=overhead_figures())),
        ("killed", lambda: results.update(killed=scenarios.killed_worker(bench))),
        ("hang", lambda: results.update(incident.incident(bench, quick=options.quick, spike=False))),
        ("spike", lambda: results.update(incident.incident(bench, quick=options.quick, hang=False))),
        ("restart", lambda: results.update(restart=scenarios.database_restart(bench))),
        ("settle", lambda: results.update(settle_latency.settle_latency(bench, quick=options.quick))),
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
    parser.add_argument(
        "--open-rate",
        type=float,
        help="The open loop's arrival rate in charges/s (default: 0.6 of the service's CPU-bound "
        "throughput in the same run); its step is 1.5 times it.",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"Also record both service workers with py-spy under a further CPU-bound load: "
        f"bench/results/{profile.FLAME_GRAPH} and {profile.ATTRIBUTION} (the last run's).",
    )
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if unknown := only - set(SCENARIO_ORDER):
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if "small_pool" in only and "floor" not in only:
        parser.error("small_pool runs within floor (it is compared with floor's CPU-bound run): add floor")
    if not wrk.available():
        parser.error("make bench needs wrk: apt-get install wrk (scripts/bootstrap.sh --dev installs it)")
    options = Options(
        quick=args.quick,
        open_rate_per_s=args.open_rate,
        profile_dir=args.output.parent if args.profile else None,
    )
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
            all_runs.append(run_once(bench, only, options))

    medians = {name: median_figures([run[name] for run in all_runs]) for name in all_runs[0]}
    table_md = table(medians)
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
