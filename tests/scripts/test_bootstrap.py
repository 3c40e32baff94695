"""scripts/bootstrap.sh installs each lock once: `make run` and `make test` in turn reinstall nothing.

The script runs for real in a copy of the repository's scripts, requirements and locks; only
`.venv/bin/pip` is a stand-in that records what it was asked to install (the packages come
from PyPI, which the test machine cannot reach).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
FILES = ("scripts/bootstrap.sh", "requirements.txt", "requirements-dev.txt")
LOCKS = ("requirements.lock", "requirements-dev.lock")
DEBIAN_PACKAGES = ("libmariadb-dev", "pkg-config", "gcc", "chromium", "faketime")
RECORDING_PIP = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/../pip-calls.log"
"""


def installed(package: str) -> bool:
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return "install ok installed" in status.stdout


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    if shutil.which("dpkg-query") is None or not all(map(installed, DEBIAN_PACKAGES)):
        pytest.skip("bootstrap.sh would install Debian packages on this machine")
    (tmp_path / "scripts").mkdir()
    for name in (*FILES, *LOCKS):
        shutil.copy(ROOT / name, tmp_path / name)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(shutil.which("python3") or "/usr/bin/python3")
    (bin_dir / "pip").write_text(RECORDING_PIP)
    (bin_dir / "pip").chmod(0o755)
    return tmp_path


def bootstrap(checkout: Path, *args: str) -> None:
    subprocess.run(
        ["bash", "scripts/bootstrap.sh", *args],
        cwd=checkout,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def pip_calls(checkout: Path) -> list[str]:
    log = checkout / ".venv" / "pip-calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_make_run_and_make_test_in_turn_install_each_lock_once(checkout: Path) -> None:
    for args in ((), ("--dev",), (), ("--dev",), ()):
        bootstrap(checkout, *args)

    calls = pip_calls(checkout)
    assert len(calls) == 2, calls
    assert calls[0].endswith("-r requirements.lock")
    assert calls[1].endswith("-r requirements-dev.lock")


def test_a_changed_lock_is_installed_again(checkout: Path) -> None:
    bootstrap(checkout)
    bootstrap(checkout, "--dev")
    with (checkout / "requirements.lock").open("a") as lock:
        lock.write("# changed\n")

    bootstrap(checkout)
    bootstrap(checkout, "--dev")

    calls = pip_calls(checkout)
    assert [call.rsplit(" ", 1)[-1] for call in calls] == [*LOCKS, "requirements.lock"]
