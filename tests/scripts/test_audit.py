"""scripts/audit.py: a known vulnerability fails unless accepted with a reason.

PyPI's vulnerability API cannot be reached from the test machine, so pip-audit runs for real
over the real lock while `requests` answers its PyPI queries from the fixture below (loaded
into the pip-audit process through sitecustomize).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
FAKE_PYPI = """
import json, requests

def fake_get(self, url, *args, **kwargs):
    if not url.startswith("https://pypi.org/pypi/"):
        raise AssertionError(f"unexpected request to {url}")
    name = url.split("/")[4]
    vulnerabilities = [] if name != "django" else [{
        "id": "PYSEC-0000-TEST", "aliases": ["CVE-0000-0001"], "fixed_in": ["99.0"],
        "summary": "A made-up advisory for the test.", "withdrawn": None,
    }]
    response = requests.Response()
    response.status_code = 200
    response.url = url
    response._content = json.dumps({"info": {}, "vulnerabilities": vulnerabilities}).encode()
    return response

requests.Session.get = fake_get
"""


def audit(tmp_path: Path, accepted: str, mode: str = "auto") -> subprocess.CompletedProcess:
    (tmp_path / "sitecustomize.py").write_text(FAKE_PYPI)
    accepted_file = tmp_path / "accepted.txt"
    accepted_file.write_text(accepted)
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "PIP_AUDIT": mode,
        "PIP_AUDIT_SERVICE": "pypi",
        "PIP_AUDIT_ACCEPTED": str(accepted_file),
        "PIP_AUDIT_CACHE_DIR": str(tmp_path / "cache"),
    }
    return subprocess.run(
        [sys.executable, "scripts/audit.py", str(ROOT / "requirements.lock")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_an_advisory_not_accepted_fails_and_an_accepted_one_passes(tmp_path: Path) -> None:
    found = audit(tmp_path, "# nothing accepted\n")
    assert found.returncode == 1, found.stdout + found.stderr
    assert "PYSEC-0000-TEST" in found.stdout and "django" in found.stdout.lower()

    accepted = audit(tmp_path, "PYSEC-0000-TEST  made up for this test; no fixed release yet\n")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "1 accepted advisories" in accepted.stdout


def test_an_accepted_entry_without_a_reason_is_refused(tmp_path: Path) -> None:
    done = audit(tmp_path, "# header\n\nGHSA-xxxx-yyyy-zzzz\n")

    assert done.returncode == 1
    assert done.stderr.strip() == (
        "accepted.txt:3: GHSA-xxxx-yyyy-zzzz has no reason; write why it is accepted after the id."
    )


def test_the_projects_accepted_file_gives_a_reason_for_each_entry() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import audit as audit_script
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    ids = audit_script.accepted_ids(ROOT / ".pip-audit-accepted.txt")
    assert all(vuln_id.split("-")[0] in {"PYSEC", "GHSA", "CVE"} for vuln_id in ids)


def test_every_pin_is_in_both_locks_with_hashes() -> None:
    for lock in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / lock).read_text()
        assert "file://" not in text and "--index-url" not in text and "--find-links" not in text
        entries = [line for line in text.splitlines() if line[:1].isalnum()]
        assert entries and all(line.endswith("\\") and "==" in line for line in entries), lock
        assert text.count("--hash=sha256:") >= len(entries)
