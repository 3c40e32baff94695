"""The small amount of code that knows the database sits behind a pool."""

from __future__ import annotations

from typing import Any

from dj_db_conn_pool.core import pool_container
from django.db import connection, connections
from django.db.models.functions import Now
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import QueuePool


def is_pool_exhausted(exc: BaseException) -> bool:
    """The pool's timeout is not a django.db.DatabaseError, so it needs its own test."""
    return isinstance(exc, PoolTimeoutError) or isinstance(exc.__cause__, PoolTimeoutError)


def release_db_connection() -> None:
    """Hand this thread's connection back to the pool before a slow network call.

    Holding it while the provider takes seconds to answer is what exhausted the
    pool in the incident. Inside an atomic block (a test's wrapping
    transaction) closing would break the transaction, so it is left alone.
    """
    if not connection.in_atomic_block:
        connection.close()


class DatabaseNow(Now):
    """The database's clock, in UTC: the one clock every "how old is this" comparison uses.

    Hosts' clocks differ (a reconcile host 10 s ahead would take a charge in flight for 1 s
    for abandoned); the database's is one. Django's Now() is CURRENT_TIMESTAMP, which MariaDB
    gives in the session's time zone, while Django stores UTC: hence UTC_TIMESTAMP there.
    """

    def as_mysql(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        return self.as_sql(compiler, connection, template="UTC_TIMESTAMP(6)", **extra_context)


def is_pooled(alias: str = "default") -> bool:
    return connections[alias].settings_dict["ENGINE"].startswith("dj_db_conn_pool.")


def pools() -> list[tuple[str, QueuePool]]:
    """Every alias's pool in this process (a copy: the container may change meanwhile)."""
    return list(pool_container.items())


def get_pool(alias: str = "default") -> QueuePool | None:
    """The SQLAlchemy pool behind an alias, or None (SQLite, or no query made yet)."""
    return pool_container.get(alias) if pool_container.has(alias) else None


def reset_pool(alias: str = "default") -> None:
    """Dispose of an alias's pool so the next query builds one from current settings.

    The pool keeps the connection parameters it was created with; call this
    after changing them (tests switching databases or pool sizes, password rotation).
    """
    connections[alias].close()
    with pool_container.lock:
        pool = pool_container.pop(alias, None)
    if pool is not None:
        pool.dispose()
