"""The small amount of code that knows the database sits behind a pool."""

from __future__ import annotations

from typing import Any

from dj_db_conn_pool.core import pool_container
from django.conf import settings
from django.db import OperationalError, connection, connections
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


# MariaDB's ER_BAD_DB_ERROR: the server is there, the database DATABASE_URL names is not.
ER_BAD_DB_ERROR = 1049


def missing_database_message(error: BaseException, alias: str = "default") -> str | None:
    """One line for "the database does not exist", or None when `error` is something else.

    The most likely first failure on MariaDB (README: create the database first); without
    this it surfaces as a long traceback from deep inside the driver.
    """
    if not isinstance(error, OperationalError) or not error.args or error.args[0] != ER_BAD_DB_ERROR:
        return None
    database = settings.DATABASES[alias]
    host, port, name = database["HOST"], database["PORT"] or 3306, database["NAME"]
    return (
        f"Unknown database {name!r} on {host}:{port} (DATABASE_URL): create it first, "
        f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4, then run manage.py migrate."
    )
