"""The provider's health, probed in the background so that /health/ never waits on the provider.

One daemon thread per process, started by the first reader (so in each
gunicorn worker after the fork, never in the master), GETs PAYMENT_HEALTH_URL
every PAYMENT_HEALTH_PROBE_S with a short timeout and keeps the last result.
A reader that finds the result older than the interval (or for another URL,
after a settings change) wakes the thread early.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import requests
from django.conf import settings
from django.utils import timezone

from core.events import log_event

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ProbeResult:
    url: str
    ok: bool
    latency_ms: int | None
    probed_at: datetime
    probed_monotonic: float
    output: str = ""


def probe_once(session: requests.Session, url: str, timeout_s: float) -> ProbeResult:
    started_wall, started = timezone.now(), time.monotonic()

    def result(ok: bool, output: str = "") -> ProbeResult:
        latency_ms = int((time.monotonic() - started) * 1000)
        return ProbeResult(url, ok, latency_ms if ok else None, started_wall, started, output)

    if not url:
        return result(False, "PAYMENT_HEALTH_URL is not set")
    try:
        response = session.get(url, timeout=(timeout_s, timeout_s), allow_redirects=False)
    except requests.Timeout:
        return result(False, f"no answer within {int(timeout_s * 1000)} ms")
    except requests.ConnectionError:
        return result(False, "connection failed (refused or unreachable)")
    except requests.RequestException as exc:
        return result(False, type(exc).__name__)
    if response.status_code != 200:
        return result(False, f"HTTP {response.status_code}")
    return result(True)


class ProviderProbe:
    def __init__(self) -> None:
        self._result: ProbeResult | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._wake = threading.Event()

    def latest(self) -> ProbeResult | None:
        """The last result, at once; None until the first probe has finished."""
        self.start()
        result = self._result
        stale = result is None or (
            result.url != settings.PAYMENT_HEALTH_URL
            or time.monotonic() - result.probed_monotonic > settings.PAYMENT_HEALTH_PROBE_S
        )
        if stale:
            self._wake.set()
        return result if result is not None and result.url == settings.PAYMENT_HEALTH_URL else None

    def start(self) -> None:
        # After a fork the thread object survives but the thread does not: is_alive() is False.
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="provider-health-probe", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        session = requests.Session()
        while True:
            interval_s = settings.PAYMENT_HEALTH_PROBE_S
            try:
                self._result = probe_once(
                    session, settings.PAYMENT_HEALTH_URL, timeout_s=min(PROBE_TIMEOUT_S, interval_s)
                )
            except Exception:  # the probe must outlive any surprise
                log_event(logger, "health.probe_error", level=logging.ERROR, exc_info=True)
            self._wake.wait(interval_s)
            self._wake.clear()


provider_probe = ProviderProbe()
