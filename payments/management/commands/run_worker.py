"""`manage.py run_worker`: the retry, reconcile and delivery loops, continuously, until SIGTERM or Ctrl-C.

The loops are the batch commands' (retry_failed_payments, reconcile_payments,
reconcile_refunds) and the delivery of events to clients' endpoints: each pass claims rows one
at a time through the same services (SKIP LOCKED or a conditional UPDATE; a lease per endpoint
for deliveries), so any number of workers, on any number of hosts, run beside each
other and beside the cron jobs. A pass that finds nothing to do sleeps `--idle`; the lookups of
rows whose outcome is still unknown run at most every `--reconcile-every` seconds, so a
provider that has not decided yet is not asked about the same row many times a second.
SIGTERM or SIGINT lets the row in hand finish, then the worker exits 0 (a second signal stops
at once; the row is put back or left unknown, as with the commands).

Hand-written rather than a job queue (Celery, RQ): the work is a poll of the database, which
the claims already make safe to run anywhere; a broker would add a second store to keep in step.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from core import options as option_types
from core.events import log_event
from payments import services
from payments.errors import ProviderUnavailable
from payments.services import ActionResult

logger = logging.getLogger("payments.commands")

ACTOR = "run_worker"
Step = Callable[..., ActionResult | None]

# (name, the service that works the next row, whether it only looks rows up)
LOOPS: tuple[tuple[str, Step, bool], ...] = (
    ("retry", services.charge_retry_next, False),
    ("reconcile", services.charge_reconcile_next, True),
    ("reconcile_refunds", services.refund_reconcile_next, True),
    ("deliver", services.deliver_next, False),  # events out to clients' endpoints
)


class Command(BaseCommand):
    help = (
        "Run the retry, reconcile, refund-reconcile and event delivery loops continuously (instead "
        "of, or beside, cron). Safe to run on many hosts at once; SIGTERM or Ctrl-C finishes the row "
        "in hand and exits 0."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--idle", type=option_types.integer(1), default=2, metavar="S", help="Seconds to sleep when idle."
        )
        parser.add_argument(
            "--reconcile-every",
            type=option_types.integer(1),
            default=15,
            metavar="S",
            help="Seconds between two lookups passes (reconcile_payments, reconcile_refunds).",
        )
        parser.add_argument(
            "--batch", type=option_types.integer(1), default=50, metavar="N", help="Rows per loop and pass."
        )
        parser.add_argument("--once", action="store_true", help="One pass of every loop, then exit.")

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()
        previous = _on_signals(stop)
        log_event(logger, "worker.started", message="Worker started", loops=[name for name, _, _ in LOOPS])
        totals: Counter[str] = Counter()
        last_lookups = float("-inf")
        try:
            while not stop.is_set():
                lookups_due = time.monotonic() - last_lookups >= options["reconcile_every"] or options["once"]
                if lookups_due:
                    last_lookups = time.monotonic()
                worked, pause_s = self._pass(options, stop, totals, lookups=lookups_due)
                if options["once"]:
                    break
                if not worked or pause_s:
                    stop.wait(max(pause_s, options["idle"]))
        except KeyboardInterrupt:
            pass  # a second signal: stop at once (the services put the row back or leave it unknown)
        finally:
            _restore(previous)
        log_event(
            logger, "worker.stopped", message="Worker stopped", **{f"{k}_rows": v for k, v in totals.items()}
        )
        self.stdout.write(
            f"run_worker: stopped after {sum(totals.values())} row(s) ({dict(sorted(totals.items()))})"
        )

    def _pass(
        self, options: dict[str, Any], stop: threading.Event, totals: Counter[str], *, lookups: bool
    ) -> tuple[int, float]:
        """One pass of each loop due; (rows worked, seconds to wait before the next pass)."""
        worked, pause_s = 0, 0.0
        services.flag_exhausted()
        for name, step, is_lookup in LOOPS:
            if is_lookup and not lookups:
                continue
            skip_ids: set[uuid.UUID] = set()
            try:
                while len(skip_ids) < options["batch"] and not stop.is_set():
                    result = step(skip_ids=skip_ids, actor=ACTOR)
                    if result is None:
                        break
                    skip_ids.add(result.transaction_id)
                    totals[f"{name}_{result.outcome.value}"] += 1
                    worked += 1
            except ProviderUnavailable as exc:
                pause_s = max(pause_s, float(exc.retry_after_s or 1))  # the breaker is open: wait it out
            except Exception:
                log_event(
                    logger,
                    "worker.error",
                    level=logging.ERROR,
                    message=f"run_worker: the {name} loop stopped on an error; it runs again next pass",
                    exc_info=True,
                    loop=name,
                )
                pause_s = max(pause_s, float(options["idle"]))
        return worked, pause_s


def _on_signals(stop: threading.Event) -> dict[int, Any]:
    """The first SIGINT or SIGTERM asks the worker to stop after the row in hand; a second one
    stops at once. Only the main thread may set handlers (not so under some test runners)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handle(signal_number: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    return {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}


def _restore(previous: dict[int, Any]) -> None:
    for number, handler in previous.items():
        signal.signal(number, handler)
