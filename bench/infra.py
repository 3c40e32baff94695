"""The processes a benchmark or a drill runs against, each on loopback and each stopped by its owner.

gunicorn with the shipped config, the fake provider, a MariaDB instance of its own (its own data
directory, socket and port, so a drill can restart it without touching the machine's shared
server), and the /proc readings the benchmark reports (CPU time, peak RSS).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import environ
import MySQLdb

ROOT = Path(__file__).resolve().parent.parent
PYTHON = (
    str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
)
GUNICORN = str(Path(PYTHON).with_name("gunicorn"))
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get_json(url: str, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def wait_until_answers(url: str, *, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before answering {url}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout_s} s")
        time.sleep(0.1)


def stop_process(process: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# /proc readings -------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process, 0 if it is gone."""
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S  # utime, stime


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
    return sorted(found)


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the most resident memory the process has used."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def listening_pid(port: int) -> int | None:
    """The process listening on a loopback TCP port (to read the database server's CPU time)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
    return None


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / CLOCK_TICKS_PER_S, sum(values) / CLOCK_TICKS_PER_S


# The fake provider ----------------------------------------------------------


@dataclass
class FakeProviderProcess:
    """`python -m fakeprovider` as a process of its own, so its CPU is not the server's."""

    latency_ms: int = 100
    timeout_window_s: float = 60.0
    api_key: str = "sk_test_bench"
    log_path: Path | None = None
    # Set: the fake posts its signed events there (--events-url), with events_secret (whsec_…).
    events_url: str | None = None
    events_secret: str = ""
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/charges"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        log = open(self.log_path or os.devnull, "ab")  # noqa: SIM115  (closed with the process)
        self.process = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "fakeprovider",
                "--port",
                str(self.port),
                "--api-key",
                self.api_key,
                "--latency-ms",
                str(self.latency_ms),
                "--timeout-window-s",
                str(self.timeout_window_s),
                *(
                    ["--events-url", self.events_url, "--events-secret", self.events_secret]
                    if self.events_url
                    else []
                ),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until_answers(f"{self.base_url}/health", timeout_s=15, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def ledger(self) -> dict[str, int]:
        """The provider's own record: idempotency key -> 1 if it made a charge with it."""
        return http_get_json(f"{self.base_url}/_fake/charges")["by_key"]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# gunicorn -------------------------------------------------------------------


def service_env(*, database_url: str, provider: FakeProviderProcess, **overrides: str) -> dict[str, str]:
    """The environment the service reads: the shipped defaults plus the bench's database and provider.

    Production mode over loopback HTTP, as the tests run it: tests/service.env fills in
    what is not already in the environment (a test secret key, the allowed hosts, no
    redirect to HTTPS).
    """
    environ.Env.read_env(ROOT / "tests" / "service.env", overwrite=False)
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "PAYMENT_SERVICE_URL": provider.url,
        "PAYMENT_API_KEY": provider.api_key,
        **overrides,
    }


@dataclass
class Gunicorn:
    """`gunicorn -c paymentsite/gunicorn.conf.py`: the shipped config, threaded workers."""

    env: Mapping[str, str]
    log_path: Path
    workers: int = 2
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    _prometheus_dir: tempfile.TemporaryDirectory | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [GUNICORN, "-c", "paymentsite/gunicorn.conf.py"]

    def start(self) -> Self:
        self._prometheus_dir = tempfile.TemporaryDirectory(prefix="paymentsite-prometheus-")
        env = {
            "PROMETHEUS_MULTIPROC_DIR": self._prometheus_dir.name,
            **self.env,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_WORKERS": str(self.workers),
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until_answers(f"{self.url}/health/live", timeout_s=30, process=self.process)
        self.wait_for_workers()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        return children(self.pid)

    def wait_for_workers(self, timeout_s: float = 30.0) -> list[int]:
        """Every worker forked and serving (the master answers nothing itself)."""
        deadline = time.monotonic() + timeout_s
        while len(self.worker_pids()) < self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn has {len(self.worker_pids())} of {self.workers} workers")
            time.sleep(0.1)
        wait_until_answers(f"{self.url}/health/live", timeout_s=timeout_s, process=self.process)
        return self.worker_pids()

    def cpu_seconds(self) -> float:
        """Master plus live workers."""
        return cpu_seconds(self.pid) + sum(cpu_seconds(pid) for pid in self.worker_pids())

    def kill_workers(self) -> list[int]:
        killed = self.worker_pids()
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return killed

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        if self._prometheus_dir is not None:
            self._prometheus_dir.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class FloorGunicorn(Gunicorn):
    """bench/floor.py's raw WSGI app on the same gunicorn: the shipped worker class, workers,
    threads and keep-alive, without the product's config (its access log, hooks and checks)."""

    threads: int = 32
    keepalive_s: int = 5

    def command(self) -> list[str]:
        return [
            GUNICORN,
            "--worker-class=paymentsite.gunicorn_worker.ThreadWorker",
            f"--workers={self.workers}",
            f"--threads={self.threads}",
            f"--keep-alive={self.keepalive_s}",
            f"--bind=127.0.0.1:{self.port}",
            "bench.floor:application",
        ]


def manage(*args: str, env: Mapping[str, str], timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    """`manage.py …` as a real subprocess (as cron would run it); raises on a non-zero exit."""
    return subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
    )


def reconcile(*, env: Mapping[str, str], after_s: int = 1) -> dict[str, Any]:
    """Run reconcile_payments and return its JSON summary.

    A drill knows that no provider call is still in flight (its workers were killed or its
    charges answered), so it may shorten the in-flight window to `after_s`; the command only
    accepts a window longer than its slowest possible charge, hence the short timeouts here
    (they apply to this process's lookups only).
    """
    window = {
        "PAYMENT_RECONCILE_AFTER_S": str(after_s),
        "PAYMENT_DEADLINE_MS": "200",
        "PAYMENT_CONNECT_TIMEOUT_MS": "200",
        "PAYMENT_TIMEOUT_MS": str(max(1, after_s * 1000 - 500)),
    }
    done = manage("reconcile_payments", "--json", env={**env, **window})
    return json.loads(done.stdout.strip().splitlines()[-1])


# MariaDB ----------------------------------------------------------------------


def mysql_url(*, port: int, database: str, host: str = "127.0.0.1", user: str = "root") -> str:
    return f"mysql://{user}@{host}:{port}/{database}"


def recreate_database(*, port: int, database: str, host: str = "127.0.0.1", user: str = "root") -> None:
    connection = MySQLdb.connect(host=host, port=port, user=user)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
            cursor.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    finally:
        connection.close()


def query(*, port: int, database: str, sql: str, host: str = "127.0.0.1") -> list[tuple[Any, ...]]:
    connection = MySQLdb.connect(host=host, port=port, user="root", database=database)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())
    finally:
        connection.close()


STATUS_COUNTERS = (
    "Questions",
    "Com_select",
    "Com_insert",
    "Com_update",
    "Com_delete",
    "Com_begin",
    "Com_commit",
    "Com_rollback",
    "Com_set_option",
    "Com_admin_commands",  # COM_PING among them: a pool's pre-ping (Questions leaves it out)
)


class StatementCounter:
    """MariaDB's global statement counters (SHOW GLOBAL STATUS) on one connection of its own.

    Global: meant for a server that runs nothing else (PrivateMariaDB). `delta()` leaves out
    the counter's own SHOW statements.
    """

    def __init__(self, *, port: int, host: str = "127.0.0.1") -> None:
        self._connection = MySQLdb.connect(host=host, port=port, user="root")

    def snapshot(self) -> dict[str, int]:
        with self._connection.cursor() as cursor:
            cursor.execute("SHOW GLOBAL STATUS")
            values = dict(cursor.fetchall())
        return {name: int(values.get(name, 0)) for name in STATUS_COUNTERS}

    @staticmethod
    def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
        """`after` minus `before`, less the one SHOW that took `after`."""
        return {name: after[name] - before[name] - (name == "Questions") for name in STATUS_COUNTERS}

    def close(self) -> None:
        self._connection.close()


class PrivateMariaDB:
    """A MariaDB server of its own under a temporary directory, which may be stopped and restarted.

    Never the machine's shared server: its own data directory, socket and port. Grant
    tables are skipped (root with no password, loopback only); the directory is removed
    by `close()`.
    """

    def __init__(self, server_args: Sequence[str] = ()) -> None:
        """`server_args` are added to mariadbd's own (TLS files, for instance)."""
        self.server_args = list(server_args)
        self.directory = Path(tempfile.mkdtemp(prefix="paymentsite-mariadb-"))
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self._installed = False

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("mariadb-install-db") and shutil.which("mariadbd", path=_SBIN_PATH))

    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    def url(self, database: str) -> str:
        return mysql_url(port=self.port, database=database)

    def _install(self) -> None:
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *_as_root(),
            ],
            capture_output=True,
            check=True,
            timeout=120,
        )
        self._installed = True

    def start(self) -> Self:
        if not self._installed:
            self._install()
        log = (self.directory / "mariadbd.log").open("ab")
        self.process = subprocess.Popen(
            [
                shutil.which("mariadbd", path=_SBIN_PATH) or "mariadbd",
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--socket={self.directory / 'mariadbd.sock'}",
                f"--pid-file={self.directory / 'mariadbd.pid'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                "--skip-grant-tables",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
                "--max-connections=200",
                *_as_root(),
                *self.server_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                MySQLdb.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=1).close()
                return
            except MySQLdb.OperationalError:
                if self.process is not None and self.process.poll() is not None:
                    log = (self.directory / "mariadbd.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"mariadbd exited with {self.process.returncode}:\n{log}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mariadbd on port {self.port} not ready within {timeout_s} s"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), as a service manager would do on restart."""
        if self.process is not None:
            stop_process(self.process, timeout_s=60)
            self.process = None

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def _as_root() -> list[str]:
    # mariadbd refuses to run as root unless told to.
    return ["--user=root"] if os.geteuid() == 0 else []
