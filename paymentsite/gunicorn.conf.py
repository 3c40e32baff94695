"""gunicorn settings: `gunicorn -c paymentsite/gunicorn.conf.py paymentsite.wsgi`.

Threaded workers (gthread, as paymentsite.gunicorn_worker: a new connection waits
for its first bytes in the poller, not in a thread): a charge spends most of its
time waiting on the provider, with no database connection held
(payments.services), so threads serve many charges per process cheaply.

Database connections. Every worker process has its own pool, so one instance
opens up to workers x (DB_CONNECTION_LIMIT + DB_MAX_OVERFLOW) connections.
MariaDB's max_connections (151 by default) is shared with the other instances,
the cron commands (each one a process with its own pool), an operator's mysql
client and monitoring; and during a rolling deploy the old and the new instance
are both connected. DB_CONNECTION_BUDGET is what this instance may use: by
default 60, that is (151 - 31 kept free) / 2 for the deploy overlap. Start-up
stops if the workers could exceed it. With the defaults: 2 workers x (10 + 0)
= 20 connections.

Threads beyond the pool size are fine: a request holds a connection only for
its short writes, and one that finds none free waits at most
DB_ACQUIRE_TIMEOUT, then gets 503 database_busy with Retry-After.

Threads beyond PAYMENT_MAX_CONCURRENT_CALLS (32 against 24 by default) are
kept for everything else: while the provider hangs, at most that many threads
wait on it and later charges wait PAYMENT_SLOT_WAIT_MS for a slot, then get 503
provider_busy, so /health/, the admin and replays still find a free thread, as
long as the charges waiting for a slot leave one (measured: README, Performance).

preload_app stays False: the pools, the provider probe and credentials threads, the Prometheus
files and watchtower's sender thread must be created in each worker after the
fork, never inherited from the master.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from paymentsite import settings as app_settings

wsgi_app = "paymentsite.wsgi:application"
bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
worker_class = "paymentsite.gunicorn_worker.ThreadWorker"  # gthread, new connections wait in the poller
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
preload_app = False
# Longer than the slowest charge (PAYMENT_DEADLINE_MS plus two short writes).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30
keepalive = 5
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
REQUEST_ID_ATOM = "{x-request-id}o"  # the response's X-Request-ID (core.logs.request_id.RequestIdMiddleware)


class AccessRequestId(logging.Filter):
    """The access line's request id as its own `request_id` field, as on the app's lines.

    gunicorn logs the access line with its atoms as the record's args; a missing
    header is "-" there.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args if isinstance(record.args, Mapping) else {}
        request_id = atoms.get(REQUEST_ID_ATOM, "-")
        record.request_id = None if request_id in ("", "-") else request_id
        return True


# gunicorn's own lines (start-up, worker exits, the access log) in the app's format
# too, so that stdout stays one JSON object per line.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "app": {
            "()": "core.logs.formatters.JsonFormatter"
            if app_settings.LOG_FORMAT == "json"
            else "core.logs.formatters.ConsoleFormatter"
        }
    },
    "filters": {"access_request_id": {"()": AccessRequestId}},
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "formatter": "app", "stream": "ext://sys.stdout"}
    },
    "root": {"level": "INFO", "handlers": []},
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "gunicorn.access": {
            "handlers": ["stdout"],
            "filters": ["access_request_id"],
            "level": "INFO",
            "propagate": False,
        },
    },
}

DB_CONNECTION_BUDGET = int(os.environ.get("DB_CONNECTION_BUDGET", "60"))
connections_per_worker = app_settings.DB_CONNECTION_LIMIT + app_settings.DB_MAX_OVERFLOW
if app_settings.DATABASE_IS_POOLED and workers * connections_per_worker > DB_CONNECTION_BUDGET:
    raise SystemExit(
        f"{workers} workers x {connections_per_worker} connections (DB_CONNECTION_LIMIT + DB_MAX_OVERFLOW) "
        f"= {workers * connections_per_worker} exceeds DB_CONNECTION_BUDGET={DB_CONNECTION_BUDGET}: "
        "lower GUNICORN_WORKERS or DB_CONNECTION_LIMIT, or raise the budget if MariaDB's "
        "max_connections allows it."
    )

if threads <= app_settings.PAYMENT_MAX_CONCURRENT_CALLS:
    raise SystemExit(
        f"GUNICORN_THREADS={threads} must exceed PAYMENT_MAX_CONCURRENT_CALLS="
        f"{app_settings.PAYMENT_MAX_CONCURRENT_CALLS}: while the provider hangs, the threads "
        "left over are the ones that answer /health/ and the admin."
    )

PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def _stop_on_invalid_configuration(server: Any) -> None:
    """Stop the master, before it binds, on a bad value (see core.checks).

    A worker that stops is only replaced by another that stops the same way, so the
    master checks first and exits with gunicorn's own "worker failed to boot" status.
    Django is set up here only on this way out (nothing is forked afterwards), so that
    `config.invalid` is logged, and shipped to CloudWatch, as a worker would have.
    """
    if not app_settings.CONFIG_ERRORS:
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paymentsite.settings")
    import django

    from core.checks import raise_if_misconfigured

    django.setup()
    try:
        raise_if_misconfigured()
    except SystemExit as stop:
        print(stop, file=sys.stderr, flush=True)
    sys.exit(server.WORKER_BOOT_ERROR)


def on_starting(server: Any) -> None:
    _stop_on_invalid_configuration(server)
    # Files left by a previous run would be summed into this one's counters.
    if PROMETHEUS_MULTIPROC_DIR:
        directory = Path(PROMETHEUS_MULTIPROC_DIR)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)


def post_worker_init(worker: Any) -> None:
    # The app is loaded in this worker: start its own threads, after the fork (paymentsite.wsgi
    # has started the first two already unless preload_app is on; start() is idempotent). The provider
    # probe runs before the first /health/ asks; the credentials thread shares this worker's
    # verdict on the provider credentials with the others through the database; the publisher
    # writes pool and breaker gauges for the other workers' scrapes (multiprocess mode only).
    from core import metrics
    from health.credentials import shared_credentials
    from health.probe import provider_probe

    provider_probe.start()
    shared_credentials.start()
    metrics.start_state_publisher()


def child_exit(server: Any, worker: Any) -> None:
    # Drops a dead worker's live gauges (pool, breaker) from the sums.
    if PROMETHEUS_MULTIPROC_DIR:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
