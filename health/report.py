"""The checks behind GET /health/ and /health/ready (IETF health-check draft, `application/health+json`).

`fail` when the database cannot be reached (that instance cannot serve) or the provider
refuses our credentials or URL (no payment can succeed until an operator fixes the
configuration; /health/ready, which load balancers use, still follows the database only).
A busy pool, an open breaker or a provider that does not answer are `warn`:
the service still answers (503 fast, with Retry-After), and taking every
instance out of the load balancer because the provider is down helps no one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import DatabaseError, connections
from django.utils import timezone

from core.db import is_pool_exhausted, is_pooled, release_db_connection
from core.events import log_event
from core.pool import UTILIZATION_WARN, pool_snapshot
from health.credentials import shared_credentials
from health.probe import provider_probe
from payments import provider
from payments.provider import CLOSED, HALF_OPEN

logger = logging.getLogger("health.selectors")  # the name it had before the move

PASS, WARN, FAIL = "pass", "warn", "fail"

# The draft's componentType for each component named in the checks' keys: the database is a
# `datastore`; the payment provider, a service we depend on, a `component`.
DATASTORE, COMPONENT = "datastore", "component"

Check = dict[str, Any]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _exhausted_check(now: datetime) -> Check:
    return {
        "status": WARN,
        "componentType": DATASTORE,
        "observedValue": None,
        "observedUnit": "ms",
        "time": _iso(now),
        "output": "pool exhausted: every connection is in use; not waiting for one",
    }


def database_connection_check(alias: str = "default") -> Check:
    """`SELECT 1` and its latency, without ever queueing behind an exhausted pool."""
    now = timezone.now()
    snapshot = pool_snapshot(alias)
    if snapshot is not None and snapshot.exhausted:
        return _exhausted_check(now)
    started = time.monotonic()
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        # Lost the race for the last free connection: the pool timed out.
        if is_pool_exhausted(exc):
            return _exhausted_check(now)
        if not isinstance(exc, DatabaseError):
            raise
        # The class and the server's error code only: the message may name the host.
        code = f" {exc.args[0]}" if exc.args and isinstance(exc.args[0], int) else ""
        return {
            "status": FAIL,
            "componentType": DATASTORE,
            "observedValue": None,
            "observedUnit": "ms",
            "time": _iso(now),
            "output": f"database unreachable ({type(exc).__name__}{code})",
        }
    finally:
        release_db_connection()
    latency_ms = round((time.monotonic() - started) * 1000, 2)
    return {
        "status": PASS,
        "componentType": DATASTORE,
        "observedValue": latency_ms,
        "observedUnit": "ms",
        "time": _iso(now),
    }


def database_pool_check(alias: str = "default") -> Check:
    if not is_pooled(alias):
        return {"status": PASS, "componentType": DATASTORE, "pooled": False}
    snapshot = pool_snapshot(alias)
    if snapshot is None:
        return {
            "status": PASS,
            "componentType": DATASTORE,
            "pooled": True,
            "output": "no connection made yet",
        }
    return {
        "status": WARN if snapshot.utilization >= UTILIZATION_WARN else PASS,
        "componentType": DATASTORE,
        "pooled": True,
        "size": snapshot.size,
        "checked_out": snapshot.checked_out,
        "checked_in": snapshot.checked_in,
        "overflow": snapshot.overflow,
        "max_overflow": snapshot.max_overflow,
        "utilization": round(snapshot.utilization, 3),
        "timeout_ms": snapshot.timeout_ms,
        "exhausted_total": snapshot.exhausted_total,
        "last_exhausted_at": _iso(snapshot.last_exhausted_at),
        "checkout_wait_p50_ms": snapshot.checkout_wait_p50_ms,
        "checkout_wait_p99_ms": snapshot.checkout_wait_p99_ms,
        "connections_opened_total": snapshot.connections_opened_total,
        "connections_invalidated_total": snapshot.connections_invalidated_total,
        "time": _iso(timezone.now()),
    }


def breaker_state() -> str:
    return provider.get_client().breaker.snapshot().state


def provider_circuit_check() -> Check:
    snapshot = provider.get_client().breaker.snapshot()
    status = {CLOSED: PASS, HALF_OPEN: WARN}.get(snapshot.state, FAIL)
    return {
        "status": status,
        "componentType": COMPONENT,
        "observedValue": snapshot.state,
        "observedUnit": "state",  # closed, half_open or open
        "consecutive_failures": snapshot.consecutive_failures,
        "failure_threshold": snapshot.failure_threshold,
        "retry_after_s": snapshot.retry_after_s,
        "opened_total": snapshot.opened_total,
        "time": _iso(timezone.now()),
    }


def provider_response_time_check() -> Check:
    result = provider_probe.latest()
    if result is None:
        # First probe still running in this process: nothing known against the provider yet.
        return {
            "status": PASS,
            "componentType": COMPONENT,
            "observedValue": None,
            "observedUnit": "ms",
            "time": None,
        }
    check: Check = {
        "status": PASS if result.ok else FAIL,
        "componentType": COMPONENT,
        "observedValue": result.latency_ms,
        "observedUnit": "ms",
        "time": _iso(result.probed_at),
    }
    if not result.ok:
        check["output"] = result.output
    return check


def provider_credentials_check() -> Check:
    """Fails from the provider's refusal of our key or URL (401/403, or 404 on a charge) until it
    accepts a charge again: the newest verdict of any process of the service (health.credentials)."""
    verdict = shared_credentials.verdict()
    if verdict is None or not verdict.refused:
        return {"status": PASS, "componentType": COMPONENT}
    return {
        "status": FAIL,
        "componentType": COMPONENT,
        "observedValue": verdict.http_status,
        "observedUnit": "HTTP status code",
        "time": _iso(verdict.at),
        "output": "the provider refused our API key or URL: check PAYMENT_API_KEY and PAYMENT_SERVICE_URL",
    }


def readiness(alias: str = "default") -> str:
    """/health/ready: `pass` when the database answers and the pool has a free connection.

    Never queues behind an exhausted pool: that reads as `fail` at once.
    """
    return PASS if database_connection_check(alias)["status"] == PASS else FAIL


# What the payment page's badge reads besides the overall status (payments/static/payments/pay.js).
BADGE_CHECKS = ("payment-provider:circuit", "payment-provider:responseTime")


@dataclass(frozen=True)
class HealthReport:
    status: str
    checks: dict[str, list[Check]]

    @property
    def http_status(self) -> int:
        return 503 if self.status == FAIL else 200

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "checks": self.checks}

    def as_public_json(self) -> dict[str, Any]:
        """For anonymous callers: pass or fail, nothing else (`warn` still serves, so it is `pass`)."""
        return {"status": FAIL if self.status == FAIL else PASS}

    def as_badge_json(self) -> dict[str, Any]:
        """For a signed-in user of the payment page: the status and the provider checks, no figures."""
        return {
            "status": self.status,
            "checks": {
                name: [{key: check[key] for key in ("status", "observedValue") if key in check}]
                for name in BADGE_CHECKS
                for check in self.checks[name][:1]
            },
        }


def health_report(alias: str = "default") -> HealthReport:
    checks = {
        "database:connection": [database_connection_check(alias)],
        "database:pool": [database_pool_check(alias)],
        "payment-provider:circuit": [provider_circuit_check()],
        "payment-provider:responseTime": [provider_response_time_check()],
        "payment-provider:credentials": [provider_credentials_check()],
    }
    if FAIL in (
        checks["database:connection"][0]["status"],
        checks["payment-provider:credentials"][0]["status"],
    ):
        status = FAIL
    elif any(check["status"] != PASS for entries in checks.values() for check in entries):
        status = WARN
    else:
        status = PASS
    return HealthReport(status=status, checks=checks)


_last_status: str | None = None  # None until this process's first report
_last_status_lock = threading.Lock()


def note_status_change(report: HealthReport) -> None:
    """Log `health.status_changed` for this process's first status, then whenever it moves."""
    global _last_status
    with _last_status_lock:
        previous, _last_status = _last_status, report.status
    if previous == report.status:
        return
    not_passing = sorted(
        name for name, entries in report.checks.items() if any(c["status"] != PASS for c in entries)
    )
    log_event(
        logger,
        "health.status_changed",
        level=logging.INFO if report.status == PASS else logging.WARNING,
        message=(
            f"Health is {report.status} (first check in this process)"
            if previous is None
            else f"Health moved from {previous} to {report.status}"
        ),
        previous_status=previous,
        status=report.status,
        checks_not_passing=not_passing,
    )
