"""pip-audit over the dev lock (which includes the runtime lock), for CI.

    .venv/bin/python scripts/audit.py [LOCK]

Every advisory found fails, except those listed with a reason in .pip-audit-accepted.txt.
`--strict` makes a package that the service could not look up fail too, so a partial
answer never passes as a clean one.

pip-audit asks PyPI's per-release JSON API (/pypi/NAME/VERSION/json) or OSV. Some
networks reach PyPI's package index but neither of those: the script probes first and,
when neither answers, says so on one line and exits 0 (PIP_AUDIT=required makes that a
failure; PIP_AUDIT=off skips the audit). PIP_AUDIT_SERVICE=pypi|osv skips the probe;
PIP_AUDIT_ACCEPTED names another accepted file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIP_AUDIT = ROOT / ".venv" / "bin" / "pip-audit"
# One release that is in the lock, to ask each service about.
PROBES = {
    "pypi": ("GET", "https://pypi.org/pypi/pip-audit/2.10.1/json", None),
    "osv": (
        "POST",
        "https://api.osv.dev/v1/query",
        b'{"package": {"name": "pip-audit", "ecosystem": "PyPI"}}',
    ),
}


def accepted_ids(path: Path) -> list[str]:
    """The ids in the accepted file; a line without a reason is an error."""
    ids = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        vuln_id, _, reason = line.partition(" ")
        if not reason.strip():
            raise SystemExit(
                f"{path.name}:{number}: {vuln_id} has no reason; write why it is accepted after the id."
            )
        ids.append(vuln_id)
    return ids


def reachable(service: str) -> bool:
    method, url, body = PROBES[service]
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str]) -> int:
    lock = argv[1] if len(argv) > 1 else str(ROOT / "requirements-dev.lock")
    mode = os.environ.get("PIP_AUDIT", "auto")
    if mode == "off":
        print("pip-audit: skipped (PIP_AUDIT=off).")
        return 0
    accepted = Path(os.environ.get("PIP_AUDIT_ACCEPTED") or ROOT / ".pip-audit-accepted.txt")
    ignores = [flag for vuln_id in accepted_ids(accepted) for flag in ("--ignore-vuln", vuln_id)]
    service = os.environ.get("PIP_AUDIT_SERVICE") or next((s for s in PROBES if reachable(s)), None)
    if service is None:
        line = (
            "pip-audit: NOT RUN: neither PyPI's per-release JSON API nor OSV (api.osv.dev) answers from this "
            "machine, so no vulnerability data can be fetched"
        )
        if mode == "required":
            print(f"{line} (PIP_AUDIT=required).", file=sys.stderr)
            return 1
        print(f"{line}; set PIP_AUDIT=required to fail instead.")
        return 0
    command = [str(PIP_AUDIT), "--strict", "--disable-pip", "--progress-spinner", "off"]
    command += ["--vulnerability-service", service, "--requirement", lock, *ignores]
    print(
        f"pip-audit: {Path(lock).name} against {service}, {len(ignores) // 2} accepted advisories", flush=True
    )
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
