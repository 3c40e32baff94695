from __future__ import annotations

from django.apps import AppConfig


class HealthConfig(AppConfig):
    name = "health"

    def ready(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.pool import QueuePool

        from health import pool, selectors
        from paymentsite import metrics

        event.listen(QueuePool, "first_connect", pool.instrument_new_pools)
        metrics.register_state_collector(
            read_pools=pool.pool_gauge_values, read_breaker_state=selectors.breaker_state
        )
