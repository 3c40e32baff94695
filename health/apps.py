from __future__ import annotations

from django.apps import AppConfig


class HealthConfig(AppConfig):
    name = "health"

    def ready(self) -> None:
        from core import metrics, pool
        from health import report

        metrics.register_state_collector(
            read_pools=pool.pool_gauge_values, read_breaker_state=report.breaker_state
        )
