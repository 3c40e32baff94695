"""Load from wrk (Debian's package, a load generator in C) with bench/wrk.lua.

The figures of a run should be the server's, so the load comes from a compiled generator
rather than Python on the same two cores; its own CPU time is still measured
(`client_cpu_s`, from the child's rusage) for a reader to check. wrk has no constant-rate
mode (that is wrk2, not in Debian): the open loop is wrk.lua's `delay()`, which schedules
each send on a fixed timetable and counts the sends that went out late.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk.lua")
THREADS = 2
TIMEOUT_S = 30


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[int, int]
    socket_errors: int  # connect, read and write errors, and wrk's timeouts
    late_sends: int
    late_max_ms: float
    client_cpu_s: float
    codes: dict[str, int] = field(default_factory=dict)  # answers >= 400 by the body's error code
    first_code_ms: dict[str, float] = field(default_factory=dict)  # each code's first answer, since the start
    raw: dict = field(default_factory=dict, repr=False)

    def count(self, *statuses: int) -> int:
        return sum(self.statuses.get(status, 0) for status in statuses)

    def throughput(self, *statuses: int) -> float:
        return self.count(*statuses) / self.duration_s if self.duration_s else math.nan

    @property
    def errors(self) -> int:
        """Answers other than 2xx, and requests that got no answer."""
        return self.requests - sum(n for s, n in self.statuses.items() if 200 <= s < 300) + self.socket_errors


def available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    *,
    url: str,
    mode: str,
    token: str,
    run_id: str,
    connections: int,
    duration_s: float,
    rate_per_s: float = 0.0,
    threads: int = THREADS,
    source: str = "tok_visa",
) -> WrkResult:
    """`wrk` for `duration_s` against `url` (its path is the GET's; charges POST /api/v1/charges
    with the card token `source`).

    Two runs may overlap (from two threads); `client_cpu_s` is then both wrks' (rusage of children)."""
    if not available():
        raise SystemExit("make bench needs wrk: apt-get install wrk (scripts/bootstrap.sh --dev installs it)")
    threads = max(1, min(threads, connections))
    command = [
        "wrk",
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        f"--timeout={TIMEOUT_S}s",
        f"--script={SCRIPT}",
        url,
        "--",
        mode,
        run_id,
        token,
        str(rate_per_s),
        str(threads),
        source,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + TIMEOUT_S + 30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((line for line in done.stdout.splitlines() if line.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    return WrkResult(
        requests=int(raw["requests"]),
        duration_s=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        statuses={int(status): int(count) for status, count in raw["statuses"].items()},
        socket_errors=sum(
            int(raw[name]) for name in ("connect_errors", "read_errors", "write_errors", "timeouts")
        ),
        late_sends=int(raw["late_sends"]),
        late_max_ms=float(raw["late_max_ms"]),
        client_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        codes={str(code): int(count) for code, count in raw.get("codes", {}).items()},
        first_code_ms={str(code): float(ms) for code, ms in raw.get("first_code_ms", {}).items()},
        raw=raw,
    )
