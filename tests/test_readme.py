"""The README's runnable shell blocks, in order, against a fresh clone of HEAD.

The convention (README, "Tests"): a ```sh block right after `<!-- runnable -->` runs
with `bash -euo pipefail` in the clone and must exit 0. After `<!-- runnable: until
Ctrl-C -->` its one command runs in the background with unusual free ports in `HOST`,
`PORT` and `PROVIDER_PORT` until it prints "Press Ctrl-C to stop."; then every `curl`
line it printed must charge, and Ctrl-C (SIGINT to its process group, as a terminal
sends it) must stop it and everything it started. After `<!-- runnable: the tests -->`
(README's test command, after the Quick start, so with the `.env` it created in place) the
block runs with `PYTEST_ARGS` naming a few quick test files and must exit 0: the tests give
the same result with a developer's `.env`.

The clone gets a `.venv` of its own whose directories are links to this checkout's:
a fresh `scripts/bootstrap.sh --dev` fills 722 MB (README, Tests).
Its install stamps are written only when the installed packages satisfy the clone's
requirements, so `bootstrap.sh` in the clone finds nothing to install.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from django.conf import settings
from packaging.requirements import Requirement

from tests.support.gunicorn import free_port

REPO = Path(settings.BASE_DIR)
BLOCK = re.compile(
    r"^<!-- runnable(?:: (?P<kind>until Ctrl-C|the tests))? -->\n```sh\n(?P<body>.*?)^```$", re.M | re.S
)
UNTIL_CTRL_C, THE_TESTS = "until Ctrl-C", "the tests"
# What the README's test command runs here: quick, and reading configuration the way a developer's
# `.env` would change (tests/paymentsite/test_config.py failed with one before the tests ignored it).
TESTS_SUBSET = "tests/paymentsite -q"
TESTS_TIMEOUT_S = 600
BANNER_END = "Press Ctrl-C to stop."
BLOCK_TIMEOUT_S = 120
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30
# What a newcomer's shell has; nothing of the test run's own configuration (DATABASE_URL, PAYMENT_…).
NEWCOMER_VARIABLES = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "SHELL")


@dataclass(frozen=True)
class Block:
    body: str
    kind: str | None  # None: runs to completion; UNTIL_CTRL_C; THE_TESTS

    @property
    def until_ctrl_c(self) -> bool:
        return self.kind == UNTIL_CTRL_C


def runnable_blocks(readme: str) -> list[Block]:
    return [Block(match["body"], match["kind"]) for match in BLOCK.finditer(readme)]


def unsatisfied(requirements_file: Path) -> list[str]:
    """Requirements (following `-r`) that this virtual environment does not satisfy."""
    missing: list[str] = []
    for raw in requirements_file.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r"):
            missing += unsatisfied(requirements_file.parent / line[2:].strip())
        elif line:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate():
                continue
            try:
                installed = metadata.version(requirement.name)
            except metadata.PackageNotFoundError:
                installed = None
            if installed is None or not requirement.specifier.contains(installed, prereleases=True):
                missing.append(f"{line} (installed: {installed})")
    return missing


def link_virtualenv(clone: Path) -> None:
    missing = unsatisfied(clone / "requirements-dev.txt")
    if missing:
        pytest.skip(f"run scripts/bootstrap.sh --dev: .venv lacks HEAD's {', '.join(missing)}")
    venv = clone / ".venv"
    venv.mkdir()
    shutil.copy(REPO / ".venv" / "pyvenv.cfg", venv / "pyvenv.cfg")
    for name in ("bin", "include", "lib", "lib64", "share"):
        if (REPO / ".venv" / name).exists():
            (venv / name).symlink_to(REPO / ".venv" / name)
    # The stamps scripts/bootstrap.sh looks for: `.installed-$(sha256sum $lock | cut -c1-16).$lock`.
    for lock in ("requirements.lock", "requirements-dev.lock"):
        digest = hashlib.sha256((clone / lock).read_bytes()).hexdigest()[:16]
        (venv / f".installed-{digest}.{lock}").touch()


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    checkout = tmp_path / "paymentsite"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(checkout)], check=True, timeout=60)
    link_virtualenv(checkout)
    return checkout


def live_members(group: int) -> list[str]:
    """Processes of a process group that are still running (zombies waiting for init do not count)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid_and_name, _, rest = stat.read_text().rpartition(")")
        except OSError:
            continue
        state, _parent, process_group = rest.split()[:3]
        if int(process_group) == group and state != "Z":
            alive.append(pid_and_name)
    return alive


@dataclass
class Server:
    process: subprocess.Popen[str]
    output: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for_banner(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while BANNER_END not in self.text():
            assert self.process.poll() is None, f"it stopped with {self.process.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"no banner after {START_TIMEOUT_S} s:\n{self.text()}"
            time.sleep(0.5)
        return self.text()

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            left = live_members(self.process.pid)
            pytest.fail(f"still running {STOP_TIMEOUT_S} s after Ctrl-C: {left}\n{self.text()}")


StartServer = Callable[[str, Path, dict[str, str]], Server]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    started: list[Server] = []

    def start(command: str, cwd: Path, env: dict[str, str]) -> Server:
        output = tmp_path / f"server-{len(started)}.log"
        with output.open("w") as sink:
            process = subprocess.Popen(
                ["bash", "-c", command],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # its own process group, as a terminal's job
            )
        server = Server(process, output)
        started.append(server)
        return server

    yield start
    for server in started:
        if live_members(server.process.pid):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=STOP_TIMEOUT_S)


def run_block(body: str, cwd: Path, env: dict[str, str], timeout_s: int = BLOCK_TIMEOUT_S) -> None:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", body],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert result.returncode == 0, f"{body}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"


def line_patterns(readme: str, env: dict[str, str]) -> list[re.Pattern[str]]:
    """README's "prints" block for `make run`, one pattern per line (`…` matches anything)."""
    block = re.search(r"and prints \(.*?\n\n```\n(?P<lines>.*?)```", readme, re.S)
    assert block, "README shows what `make run` prints"
    text = block["lines"].replace("dDz6E0r9.bA10…", "…")  # the example token
    text = text.replace(":8000", f":{env['PORT']}").replace(":8099", f":{env['PROVIDER_PORT']}")
    return [re.compile(".*?".join(map(re.escape, line.split("…")))) for line in text.splitlines()]


def assert_readme_shows_what_it_prints(readme: str, printed: str, env: dict[str, str]) -> None:
    """Every line printed up to the banner's end is one README shows, and every one README shows is printed.

    Not compared line by line: the fake provider and the server start at once, so their first
    lines may come in either order.
    """
    patterns = line_patterns(readme, env)
    lines = printed[: printed.index(BANNER_END) + len(BANNER_END)].splitlines()
    unshown = [line for line in lines if not any(pattern.fullmatch(line) for pattern in patterns)]
    unprinted = [pattern.pattern for pattern in patterns if not any(map(pattern.fullmatch, lines))]
    assert unshown == [], f"printed, but README does not show it:\n{printed}"
    assert unprinted == [], f"README shows it, but it was not printed:\n{printed}"


def smoke_until_ctrl_c(server: Server, cwd: Path, env: dict[str, str]) -> None:
    banner = server.wait_for_banner()
    assert_readme_shows_what_it_prints((cwd / "README.md").read_text(), banner, env)
    assert f"Paymentsite is running at http://127.0.0.1:{env['PORT']}/" in banner
    charges = [line.strip() for line in banner.splitlines() if line.strip().startswith("curl ")]
    assert charges, banner
    for charge in charges:
        answer = subprocess.run(
            ["bash", "-c", charge], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
        )
        assert json.loads(answer.stdout)["status"] == "succeeded", (charge, answer.stdout, answer.stderr)

    server.ctrl_c()
    assert "Stopped." in server.text()
    assert live_members(server.process.pid) == [], server.text()
    for port in (env["PORT"], env["PROVIDER_PORT"]):  # nobody listens there any more
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the charges' TIME_WAIT
            probe.bind(("127.0.0.1", int(port)))


@pytest.mark.slow
def test_readme_runnable_blocks_work_on_a_fresh_clone(clone: Path, start_server: StartServer) -> None:
    blocks = runnable_blocks((clone / "README.md").read_text())
    assert any(block.until_ctrl_c for block in blocks), "the Quick start's `make run` block is not marked"
    assert any(block.kind is None for block in blocks), "the Quick start's set-up block is not marked"
    assert "cp .env.example .env" in blocks[0].body, "the Quick start's first block creates .env"
    assert [block.kind for block in blocks].count(THE_TESTS) == 1, "README's test command is not marked"
    assert blocks[-1].kind == THE_TESTS, "README's test command runs after the Quick start's blocks"
    env = {name: os.environ[name] for name in NEWCOMER_VARIABLES if name in os.environ}
    env.update(HOST="127.0.0.1", PORT=str(free_port()), PROVIDER_PORT=str(free_port()))

    for block in blocks:
        if block.until_ctrl_c:
            smoke_until_ctrl_c(start_server(block.body, clone, env), clone, env)
        elif block.kind == THE_TESTS:
            assert (clone / ".env").is_file(), "the tests run with the Quick start's .env in place"
            run_block(block.body, clone, {**env, "PYTEST_ARGS": TESTS_SUBSET}, TESTS_TIMEOUT_S)
        else:
            run_block(block.body, clone, env)


def test_quick_start_lists_everything_a_first_run_without_env_is_refused_for() -> None:
    """What `manage.py check` reports in a newcomer's shell before `cp .env.example .env`."""
    env = {name: os.environ[name] for name in NEWCOMER_VARIABLES if name in os.environ}
    env["DJANGO_READ_ENV_FILE"] = "false"  # as if this checkout had no .env
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    readme = (REPO / "README.md").read_text()
    paragraph = readme[readme.index("Without `.env`") :].split("\n\n", 1)[0]

    errors = [line for line in result.stderr.splitlines() if "(paymentsite.E001)" in line]
    named = [re.findall(r"\b[A-Z][A-Z0-9_]{3,}\b", line.split(")", 1)[1])[0] for line in errors]
    assert result.returncode == 1
    assert errors, result.stderr
    assert [name for name in named if f"`{name}`" not in paragraph] == [], paragraph
    assert "(paymentsite.I001)" in result.stderr and "cp .env.example .env" in result.stderr
    assert "`paymentsite.I001`" in paragraph and "cp .env.example .env" in paragraph
