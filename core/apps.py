from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    """What every app may use and that uses no app: events and logging, metrics, the
    database helpers and pool instrumentation, and the checks that stop a misconfigured process."""

    name = "core"

    def ready(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.pool import QueuePool

        import core.checks  # noqa: F401  (registers the configuration check)
        from core import pool

        event.listen(QueuePool, "first_connect", pool.instrument_new_pools)
