"""One answer on the provider credentials for the whole service, not one per process.

The charge path keeps each process's own verdict (payments.provider.misconfiguration: the
provider refused our key or URL, or accepted them), in memory. Each serving process also runs
a daemon thread (started after the fork, gunicorn.conf.py) that every PAYMENT_HEALTH_PROBE_S:

1. writes this process's verdict to the database (health.models.ProviderCredentials, one row
   per provider configuration) when it is newer than the row's and says otherwise, with a
   conditional UPDATE, so the newest answer wins whichever process writes last;
2. reads the row back.

A new verdict wakes the thread at once, so a refusal or an acceptance is written as soon as one
process learns it, and every other process reads it within PAYMENT_HEALTH_PROBE_S (plus the
time a query takes). The check shows the newer of this process's verdict and the shared one.

Written here rather than taken from a library: it is one row and two queries, and the cache
frameworks at hand (Django's) are per process unless backed by the same database anyway.

The thread never queues behind an exhausted pool (it skips that round), and a database error
leaves the last shared verdict in place: `database:connection` reports the database itself.
"""

from __future__ import annotations

import hashlib
import logging
import threading

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction

from core.db import release_db_connection
from core.events import log_event
from core.pool import pool_snapshot
from health.models import ProviderCredentials
from payments.provider import misconfiguration
from payments.provider.misconfiguration import Verdict

logger = logging.getLogger(__name__)


def fingerprint() -> str:
    """The provider configuration a verdict is about; a SHA-256, so the key is never stored."""
    material = "\n".join(
        ("paymentsite provider credentials", settings.PAYMENT_PROVIDER_CLASS, settings.PAYMENT_SERVICE_URL)
    )
    return hashlib.sha256(f"{material}\n{settings.PAYMENT_API_KEY}".encode()).hexdigest()


def _verdict_of(row: ProviderCredentials | None) -> Verdict | None:
    return None if row is None else Verdict(refused=row.refused, at=row.at, http_status=row.http_status)


def _newer(a: Verdict | None, b: Verdict | None) -> Verdict | None:
    if a is None or b is None:
        return a or b
    return a if a.at >= b.at else b


class SharedCredentials:
    def __init__(self) -> None:
        self._shared: tuple[str, Verdict | None] | None = None  # (fingerprint, verdict) last read
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._wake = threading.Event()

    def shared(self) -> Verdict | None:
        """The database's verdict as last read, for the current configuration."""
        shared = self._shared
        return shared[1] if shared is not None and shared[0] == fingerprint() else None

    def verdict(self) -> Verdict | None:
        """What the service knows: the newer of this process's verdict and the shared one."""
        return _newer(misconfiguration.latest(), self.shared())

    def sync_once(self) -> None:
        """Write this process's verdict if the row must change, then read the row."""
        key = fingerprint()
        row = ProviderCredentials.objects.filter(pk=key).first()
        local = misconfiguration.latest()
        if local is not None and self._must_publish(local, _verdict_of(row)):
            self._publish(key, local, exists=row is not None)
            row = ProviderCredentials.objects.filter(pk=key).first()
        self._shared = (key, _verdict_of(row))

    @staticmethod
    def _must_publish(local: Verdict, shared: Verdict | None) -> bool:
        if shared is None:
            return local.refused  # no row: nothing was ever refused for this configuration
        return local.at > shared.at and local.refused != shared.refused

    @staticmethod
    def _publish(key: str, local: Verdict, *, exists: bool) -> None:
        fields = {"refused": local.refused, "http_status": local.http_status, "at": local.at}
        if not exists:
            try:
                with transaction.atomic():
                    ProviderCredentials.objects.create(fingerprint=key, **fields)
                return
            except IntegrityError:
                pass  # another process wrote the first row meanwhile: the newer one wins below
        ProviderCredentials.objects.filter(pk=key, at__lt=local.at).update(**fields)

    def _on_verdict(self, verdict: Verdict) -> None:
        """On the charge path: wake the thread only when the shared row must change."""
        shared = self.shared()
        if verdict.refused != (shared is not None and shared.refused):
            self._wake.set()

    def start(self) -> None:
        """Start this process's thread (after a fork: the thread object survives, the thread not)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                misconfiguration.add_listener(self._on_verdict)
                self._thread = threading.Thread(target=self._run, name="provider-credentials", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.clear()
            snapshot = pool_snapshot()
            try:
                if snapshot is None or not snapshot.exhausted:
                    self.sync_once()
            except DatabaseError:
                pass  # the last shared verdict stands; /health/'s database check says why
            except Exception:  # the thread must outlive any surprise
                log_event(logger, "health.probe_error", level=logging.ERROR, exc_info=True)
            finally:
                release_db_connection()
            self._wake.wait(settings.PAYMENT_HEALTH_PROBE_S)


shared_credentials = SharedCredentials()
