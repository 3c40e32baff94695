"""py-spy flame graphs of the service's workers under load, and where their CPU samples fall.

py-spy (requirements-dev.txt) samples a running worker from outside, without changing its
code. Only the thread holding the GIL is sampled (`--gil`), so the samples are where the
worker's CPU goes, not where its threads wait. One worker is recorded as a flame graph (SVG),
the other, under the same load, as raw collapsed stacks, which `attribute()` sorts into
layers: each sample counts once, for the innermost frame that belongs to a layer (logging
inside an ORM call is logging's; a regex inside DRF is DRF's). The attribution is a small
hand-written fold over py-spy's own text format: no library reads that format.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.infra import Gunicorn

PY_SPY = shutil.which("py-spy") or str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "py-spy")
SAMPLES_PER_S = 100
FLAME_GRAPH = "profile-charge.svg"
ATTRIBUTION = "profile-charge.md"

# (layer, pattern on a frame's file path), innermost match wins; checked in this order per frame.
LAYERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "logging (stdlib logging, core.logs, gunicorn's access log)",
        re.compile(r"/logging/|/core/logs/|gunicorn/glogging"),
    ),
    ("metrics (prometheus_client, core.metrics)", re.compile(r"prometheus_client/|/core/metrics")),
    (
        "database driver and pool (MySQLdb, SQLAlchemy pool, core.pool)",
        re.compile(r"MySQLdb/|sqlalchemy/|dj_db_conn_pool/|/core/pool"),
    ),
    ("ORM and Django's db layer (django.db)", re.compile(r"^django/db/")),
    (
        "DRF (views, serializers, renderers, auth)",
        re.compile(r"^(rest_framework|rest_framework_api_key|drf_spectacular)/"),
    ),
    ("provider HTTP client (requests, urllib3, http.client)", re.compile(r"^(requests|urllib3|http)/")),
    ("JSON", re.compile(r"^json/")),
    ("gunicorn (HTTP parsing, worker loop)", re.compile(r"^gunicorn/")),
    ("Django request handling, middleware, URLs", re.compile(r"^(django|whitenoise)/")),
    ("the service's own code", re.compile(r"^(payments|apikeys|core|health|paymentsite)/")),
)
OTHER = "other (stdlib, threading, uuid, hashing)"
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
OWN_CODE = re.compile(r"^(payments|apikeys|core|health|paymentsite)/")


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for frame in stack.split(";"):
        match = FRAME.match(frame.strip())
        frames.append((match["function"], match["file"]) if match else (frame.strip(), ""))
    return frames


def attribute(collapsed: str) -> tuple[int, Counter[str], Counter[str]]:
    """(samples, samples per layer, inclusive samples per function of the service's own code)."""
    total, layers, own = 0, Counter[str](), Counter[str]()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        total += count
        layer = next(
            (name for _, file in reversed(frames) for name, pattern in LAYERS if pattern.search(file)),
            OTHER,
        )
        layers[layer] += count
        seen = set()
        for function, file in frames:
            if OWN_CODE.search(file):
                name = f"{function} ({file})"
                if name not in seen:
                    seen.add(name)
                    own[name] += count
    return total, layers, own


def render(total: int, layers: Counter[str], own: Counter[str], *, command: str) -> str:
    lines = [
        "# Where a worker's CPU goes under the CPU-bound charge load",
        "",
        f"py-spy, {SAMPLES_PER_S} samples/s of the thread holding the GIL in one gunicorn worker "
        f"while `{command}` ran its CPU-bound load (the other worker: `{FLAME_GRAPH}`). {total:,} samples.",
        "",
        "| Layer (innermost frame that belongs to one) | Share of samples |",
        "|---|---|",
        *(f"| {name} | {count / total:.0%} |" for name, count in layers.most_common()),
        "",
        "The service's own functions, inclusive (a sample counts for every one on its stack):",
        "",
        "| Function | Share of samples |",
        "|---|---|",
        *(f"| `{name}` | {count / total:.0%} |" for name, count in own.most_common(15)),
        "",
    ]
    return "\n".join(lines)


def record_workers(
    server: Gunicorn,
    load: Callable[[], Any],
    *,
    duration_s: float,
    output_dir: Path,
    command: str = "python -m bench.run --profile",
) -> dict[str, float | str]:
    """Record worker 1 as a flame graph and worker 2 as raw stacks while `load()` runs."""
    workers = server.worker_pids()
    output_dir.mkdir(parents=True, exist_ok=True)
    raw_path = server.log_path.with_name("profile-charge.txt")
    common = [
        PY_SPY,
        "record",
        f"--rate={SAMPLES_PER_S}",
        f"--duration={max(1, int(duration_s))}",
        "--gil",  # the thread running Python at each sample: where the CPU goes
    ]
    recorders = [
        subprocess.Popen(
            [*common, f"--pid={workers[0]}", "--format=flamegraph", f"--output={output_dir / FLAME_GRAPH}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        ),
        subprocess.Popen(
            [*common, f"--pid={workers[-1]}", "--format=raw", f"--output={raw_path}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        ),
    ]
    loader = threading.Thread(target=load)
    loader.start()
    for recorder in recorders:
        _, error = recorder.communicate(timeout=duration_s + 60)
        if recorder.returncode != 0:
            raise RuntimeError(f"py-spy failed: {error.decode(errors='replace').strip()}")
    loader.join()
    total, layers, own = attribute(raw_path.read_text())
    (output_dir / ATTRIBUTION).write_text(render(total, layers, own, command=command))
    return {"samples": total, **{name: count / total for name, count in layers.items()}}
