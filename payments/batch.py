"""What retry_failed_payments and reconcile_payments share.

Rows are claimed one at a time by the services (SKIP LOCKED or a conditional
UPDATE), so several copies of a command, on several hosts, can run at once.
The first Ctrl-C or SIGTERM lets the transaction in hand finish and stops; a
second stops at once (a row whose provider call had not started is put back).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.db.models import QuerySet

from core import options as option_types
from core.events import log_event
from payments.errors import ProviderUnavailable
from payments.models import Refund, Transaction
from payments.services import ERROR_OUTCOMES, ActionOutcome, ActionResult

logger = logging.getLogger("payments.commands")

# Exit codes, as README "Operators" documents them.
EXIT_OK = 0
EXIT_ERRORS = 1  # some rows failed or errored, or the provider could not be reached
EXIT_USAGE = 2  # bad arguments (argparse's own exit status for an option out of range); nothing was done
EXIT_SIGNAL_BASE = 128  # + the signal's number: stopped by Ctrl-C (130) or SIGTERM (143)
# Row outcomes that make the run exit 1.
FAILING_OUTCOMES = frozenset({ActionOutcome.FAILED, *ERROR_OUTCOMES})


class _GracefulStop:
    def __init__(self, stderr: OutputWrapper) -> None:
        self.stderr = stderr
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def __enter__(self) -> _GracefulStop:
        # Signal handlers can only be set from the main thread (not so under some test runners).
        if threading.current_thread() is threading.main_thread():
            for signal_number in (signal.SIGINT, signal.SIGTERM):
                self._previous[signal_number] = signal.signal(signal_number, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signal_number, handler in self._previous.items():
            signal.signal(signal_number, handler)

    def _handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.signal_number = signal_number
        self.stderr.write(
            f"{signal.Signals(signal_number).name}: stopping after the transaction in hand "
            "(send it again to stop at once)."
        )


@dataclass
class _Run:
    results: list[ActionResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False

    def counts(self) -> Counter[str]:
        return Counter(result.outcome.value for result in self.results)

    def all_errors(self) -> list[str]:
        """The run's errors, then one line per row that failed or errored."""
        return self.errors + [
            f"{result.transaction_id}: {result.outcome.value}: {result.detail}".rstrip(": ")
            for result in self.results
            if result.outcome in FAILING_OUTCOMES
        ]


class BatchCommand(BaseCommand):
    default_limit = 100
    model: type[Transaction] | type[Refund] = Transaction  # what --id names and the rows are

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--limit",
            type=option_types.integer(1),
            default=self.default_limit,
            help="Work at most this many transactions (at least 1).",
        )
        parser.add_argument(
            "--id",
            dest="transaction_ids",
            action="append",
            type=uuid.UUID,
            default=[],
            metavar="UUID",
            help="Work only this transaction (may be repeated).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="List what would be worked; change nothing."
        )
        parser.add_argument("--json", action="store_true", help="Print the summary as one JSON line.")
        parser.add_argument(
            "--progress-every",
            type=option_types.integer(1),
            default=25,
            metavar="N",
            help="Report progress on stderr every N transactions, N at least 1 (-v 2: every one).",
        )

    def work_next(self, *, skip_ids: set[uuid.UUID], options: dict[str, Any]) -> ActionResult | None:
        raise NotImplementedError

    def work_one(self, *, transaction_id: uuid.UUID, options: dict[str, Any]) -> ActionResult:
        raise NotImplementedError

    def dry_run_candidates(self, options: dict[str, Any]) -> QuerySet[Any]:
        raise NotImplementedError

    def before_work(self, options: dict[str, Any]) -> None:
        """Runs once before the rows are worked (not in a dry run)."""

    def handle(self, *args: Any, **options: Any) -> None:
        if options["json"]:
            _logs_to_stderr()  # stdout carries exactly one JSON document
        unknown = sorted(
            str(pk)
            for pk in set(options["transaction_ids"])
            - set(self.model.objects.filter(pk__in=options["transaction_ids"]).values_list("pk", flat=True))
        )
        if unknown:
            what = self.model._meta.verbose_name
            raise CommandError(f"No {what} with id {', '.join(unknown)}.", returncode=EXIT_USAGE)
        started = time.monotonic()
        if options["dry_run"]:
            self._report_dry_run(options, started)
            return
        run = _Run()
        self.before_work(options)
        with _GracefulStop(self.stderr) as stop:
            try:
                for result in self._work(options, stop, run):
                    run.results.append(result)
                    self._progress(run, options)
            except KeyboardInterrupt:
                run.interrupted = True
        run.interrupted = run.interrupted or stop.requested
        self._report(run, options, started)
        if run.interrupted:
            signal_number = stop.signal_number or signal.SIGINT
            raise CommandError("Interrupted.", returncode=EXIT_SIGNAL_BASE + signal_number)
        errors = run.all_errors()
        if errors:
            raise CommandError(f"{len(errors)} error(s); see above.", returncode=EXIT_ERRORS)

    def _work(self, options: dict[str, Any], stop: _GracefulStop, run: _Run) -> Iterator[ActionResult]:
        skip_ids: set[uuid.UUID] = set()
        try:
            if options["transaction_ids"]:
                for transaction_id in options["transaction_ids"]:
                    if stop.requested:
                        return
                    yield self.work_one(transaction_id=transaction_id, options=options)
                return
            while len(skip_ids) < options["limit"] and not stop.requested:
                result = self.work_next(skip_ids=skip_ids, options=options)
                if result is None:
                    return
                skip_ids.add(result.transaction_id)
                yield result
        except ProviderUnavailable as exc:
            run.errors.append(
                f"The provider is unavailable (circuit open; retry after {exc.retry_after_s} s). "
                "The remaining transactions are left for the next run."
            )
        except Exception as exc:
            log_event(
                logger,
                "payment.command_error",
                level=logging.ERROR,
                message=f"{self.name} stopped on an error",
                exc_info=True,
                command=self.name,
            )
            run.errors.append(f"{type(exc).__name__}: {exc}")

    @property
    def name(self) -> str:
        return self.__module__.rsplit(".", 1)[-1]

    def _progress(self, run: _Run, options: dict[str, Any]) -> None:
        done = len(run.results)
        if options["verbosity"] >= 2:
            result = run.results[-1]
            detail = f": {result.detail}" if result.detail else ""
            self.stderr.write(f"[{done}] {result.transaction_id} {result.outcome} ({result.status}){detail}")
        elif options["verbosity"] >= 1 and not options["json"] and done % options["progress_every"] == 0:
            counts = ", ".join(f"{count} {outcome}" for outcome, count in sorted(run.counts().items()))
            self.stderr.write(f"… {done} done ({counts})")

    def _report(self, run: _Run, options: dict[str, Any], started: float) -> None:
        duration_ms = int((time.monotonic() - started) * 1000)
        counts = run.counts()
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "command": self.name,
                        "dry_run": False,
                        "interrupted": run.interrupted,
                        "duration_ms": duration_ms,
                        "total": len(run.results),
                        "counts": dict(sorted(counts.items())),
                        "errors": run.all_errors(),
                        "transactions": [
                            {
                                "id": str(result.transaction_id),
                                "outcome": result.outcome.value,
                                "status": result.status,
                                "detail": result.detail,
                            }
                            for result in run.results
                        ],
                    },
                    separators=(",", ":"),
                )
            )
            return
        state = " (interrupted)" if run.interrupted else ""
        lines = [f"{self.name}: {len(run.results)} transaction(s) in {duration_ms / 1000:.1f} s{state}"]
        lines += self._table(counts)
        lines += [f"error: {error}" for error in run.all_errors()]
        self.stdout.write("\n".join(lines))

    @staticmethod
    def _table(counts: Counter[str]) -> list[str]:
        rows = [(outcome.value, counts[outcome.value]) for outcome in ActionOutcome if counts[outcome.value]]
        rows.append(("total", sum(counts.values())))
        width = max(len("outcome"), *(len(name) for name, _ in rows))
        return [f"  {'outcome':<{width}}  {'count':>5}"] + [f"  {name:<{width}}  {n:>5}" for name, n in rows]

    def _report_dry_run(self, options: dict[str, Any], started: float) -> None:
        candidates = list(self.dry_run_candidates(options)[: options["limit"]])
        rows = [
            {
                "id": str(txn.pk),
                "status": txn.status,
                "error_type": txn.error_type,
                "attempts": txn.attempts,
                "amount": txn.amount_display,
                "updated_at": txn.updated_at.isoformat(),
            }
            for txn in candidates
        ]
        if options["json"]:
            duration_ms = int((time.monotonic() - started) * 1000)
            summary = {
                "command": self.name,
                "dry_run": True,
                "duration_ms": duration_ms,
                "total": len(rows),
                "counts": dict(sorted(Counter(row["status"] for row in rows).items())),
            }
            self.stdout.write(json.dumps({**summary, "transactions": rows}, separators=(",", ":")))
            return
        lines = [f"{self.name} --dry-run: {len(rows)} transaction(s) would be worked; nothing was changed."]
        lines += [
            f"  {row['id']}  {row['status']:<9} {row['error_type'] or '-':<26} "
            f"attempts={row['attempts']}  {row['amount']}"
            for row in rows
        ]
        self.stdout.write("\n".join(lines))


def _logs_to_stderr() -> None:
    """With --json, log lines go to stderr so that `… --json | jq` reads one document."""
    for logger_obj in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger_obj, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
                handler.setStream(sys.stderr)
