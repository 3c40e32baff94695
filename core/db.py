"""The small amount of code that knows the database sits behind a pool."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from dj_db_conn_pool.core import pool_container
from django.conf import settings
from django.db import OperationalError, connection, connections, models
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


@functools.cache
def select_sql(model: type[models.Model], where: str, *, alias: str = "t", extra: str = "") -> str:
    """`SELECT` every concrete column of `model` (then `extra`, more columns) `FROM` its table
    as `alias`, then `where` (the rest of the statement, with `%s` placeholders): the statement
    for `model.objects.raw()`, which makes the model's instances with its fields' converters.

    For the hottest reads (the API key on every request, one charge's read). Django compiles a
    queryset's SQL anew on every query, and on this machine that costs about three times the
    query itself (`bench/overhead.py`); the columns come from the model, so they cannot drift
    from it, and the rows are still the ORM's model instances. Written here because no library
    kept up with Django 5 caches a queryset's compiled SQL (django-prepared-queries stopped at
    Django 1.x).
    """
    quote = connections["default"].ops.quote_name
    columns = ", ".join(f"{alias}.{quote(field.column)}" for field in model._meta.concrete_fields)
    return (
        f"SELECT {columns}{', ' + extra if extra else ''} FROM {quote(model._meta.db_table)} {alias} {where}"
    )


def db_value(model: type[models.Model], name: str, value: Any) -> Any:
    """`value` as the database stores `model`'s field `name`, for a raw statement's parameter."""
    return model._meta.get_field(name).get_db_prep_value(value, connections["default"])


def set_prefetched(instance: models.Model, name: str, rows: Iterable[models.Model]) -> None:
    """Fill `instance`'s related manager `name` (`instance.<name>.all()`) with `rows`, as
    prefetch_related does, so reading it sends no query; a queryset made from it (a filter, an
    order) queries the database, as after prefetch_related."""
    manager = getattr(instance, name)
    queryset = manager.get_queryset()  # the related rows' own queryset: nothing cached yet
    queryset._result_cache, queryset._prefetch_done = list(rows), True
    cache_name = manager.field.remote_field.cache_name  # what the related manager reads
    instance.__dict__.setdefault("_prefetched_objects_cache", {})[cache_name] = queryset


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
