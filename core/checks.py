"""What stops a misconfigured process: the configuration check, and unencrypted database connections."""

from __future__ import annotations

import logging
from typing import Any

import MySQLdb
from django.conf import settings
from django.core import checks
from django.db import DatabaseError, connection
from sqlalchemy import event
from sqlalchemy.pool import QueuePool

from core.db import missing_database_message
from core.events import log_event

logger = logging.getLogger("paymentsite.checks")  # the name it had before the move


# What a newcomer who has not created .env yet should do (README, Quick start).
FIRST_RUN_HINT = (
    "No .env was read (there is none, or DJANGO_READ_ENV_FILE=false). For a first run on a development "
    "machine: cp .env.example .env (DJANGO_DEBUG=true, SQLite and the fake provider settle every error "
    "above). In production, set the variables in the environment (README.md, Configuration)."
)


@checks.register(checks.Tags.compatibility, deploy=False)
def configuration_is_valid(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = [
        checks.Error(message, hint="See .env.example and README.md, Configuration.", id="paymentsite.E001")
        for message in settings.CONFIG_ERRORS
    ]
    if errors and not settings.ENV_FILE_READ:
        errors.append(checks.Info(FIRST_RUN_HINT, id="paymentsite.I001"))
    return errors


# Not Tags.database: Django runs those only when a command names a database, and plain
# `manage.py check` must report a missing database too.
@checks.register("database_exists")
def database_exists(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The MariaDB database DATABASE_URL names exists (other connection problems are not configuration)."""
    if settings.CONFIG_ERRORS or not settings.DATABASE_IS_POOLED:
        return []
    try:
        connection.ensure_connection()
    except DatabaseError as error:
        message = missing_database_message(error)
        return [checks.Error(message, id="paymentsite.E002")] if message else []
    finally:
        connection.close()
    return []


def raise_if_misconfigured() -> None:
    """Stop a process that does not run Django's checks (gunicorn) on a bad value."""
    if settings.CONFIG_ERRORS:
        log_event(
            logger,
            "config.invalid",
            level=logging.CRITICAL,
            message="Invalid configuration: " + " ".join(settings.CONFIG_ERRORS),
            errors=list(settings.CONFIG_ERRORS),
        )
        raise SystemExit("Invalid configuration:\n  " + "\n  ".join(settings.CONFIG_ERRORS))


# 2026 is the client library's own "TLS/SSL error" code.
CR_SSL_CONNECTION_ERROR = 2026


@event.listens_for(QueuePool, "connect")
def refuse_unencrypted_connection(dbapi_connection: Any, connection_record: Any) -> None:
    """Check each new pooled connection when DB_SSL_MODE asks for TLS.

    MariaDB's client library enforces VERIFY_CA and VERIFY_IDENTITY itself, but with
    REQUIRED it falls back to plain text when the server offers no TLS. One query per
    new connection (not per checkout) closes that gap for every mode that asks for TLS.
    """
    if not settings.DATABASE_REQUIRES_TLS:
        return
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        row = cursor.fetchone()
    if row and row[1]:
        return
    dbapi_connection.close()
    mode = settings.DATABASES["default"]["OPTIONS"]["ssl_mode"]
    # The driver's own error, so that Django reports it as a database OperationalError (503).
    raise MySQLdb.OperationalError(
        CR_SSL_CONNECTION_ERROR,
        f"TLS/SSL error: DB_SSL_MODE={mode} but the connection to the database is not encrypted "
        "(the server offers no TLS)",
    )
