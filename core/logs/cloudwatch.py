"""Shipping log lines to CloudWatch through watchtower, without ever stopping start-up."""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
import sys
import threading
from typing import Any

import boto3
import watchtower
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from core.logs.redaction import redact


def _warn(message: str) -> None:
    # stderr directly, not the logging system: CloudWatch is what is failing,
    # and `warnings` would repeat or hide it depending on the filters in force.
    print(f"paymentsite: {message}", file=sys.stderr, flush=True)


_sender = threading.local()


def _not_from_sender(record: logging.LogRecord) -> bool:
    """Drop what botocore and urllib3 log while a batch is being sent: it would feed back."""
    return not getattr(_sender, "active", False)


class CloudWatchHandler(watchtower.CloudWatchLogHandler):
    """watchtower's queue and sending thread, with our own delivery of a batch.

    watchtower creates the log group when the handler is built (a network call
    that can stall start-up) and, on failure, retries each batch five times and
    writes a warning for every try. Here the group and stream are created from
    the sending thread, botocore does the retrying (throttling included), a
    batch that still fails is dropped (stdout keeps every line), and stderr
    gets one warning when delivery starts failing and one line when it recovers.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._ready_streams: set[str] = set()
        self._failing = False
        self._dropped_batches = 0
        # Why the last batch was dropped, or None once one is delivered (read by check_logging).
        self.delivery_error: str | None = None
        super().__init__(create_log_group=False, **kwargs)
        self.addFilter(_not_from_sender)

    def _submit_batch(self, batch: list[dict[str, Any]], log_stream_name: str, max_retries: int = 0) -> None:
        if not batch:
            return
        events = sorted(batch, key=operator.itemgetter("timestamp"))
        _sender.active = True
        try:
            self._put(events, log_stream_name)
        except (BotoCoreError, ClientError) as exc:
            self._dropped_batches += 1
            self.delivery_error = f"{type(exc).__name__}: {redact(str(exc))}"
            if not self._failing:
                self._failing = True
                _warn(
                    f"cannot ship logs to CloudWatch log group {self.log_group_name!r} "
                    f"({self.delivery_error}); batches are dropped until it recovers, "
                    "logs go on on stdout."
                )
        else:
            self.delivery_error = None
            if self._failing:
                self._failing = False
                _warn(
                    f"shipping logs to CloudWatch log group {self.log_group_name!r} again; "
                    f"{self._dropped_batches} batch(es) were dropped."
                )
                self._dropped_batches = 0
        finally:
            _sender.active = False

    def _put(self, events: list[dict[str, Any]], stream: str) -> None:
        if stream not in self._ready_streams:
            self._create_stream(stream)
        put = functools.partial(
            self.cwl_client.put_log_events, logGroupName=self.log_group_name, logStreamName=stream
        )
        try:
            put(logEvents=events)
        except self.cwl_client.exceptions.ResourceNotFoundException:
            # Deleted while we were running (retention clean-up, an operator): make it again.
            self._create_stream(stream)
            put(logEvents=events)

    def _create_stream(self, stream: str) -> None:
        """Needs logs:CreateLogGroup only when the group is missing."""
        exceptions = self.cwl_client.exceptions
        try:
            self.cwl_client.create_log_stream(logGroupName=self.log_group_name, logStreamName=stream)
        except exceptions.ResourceAlreadyExistsException:
            pass
        except exceptions.ResourceNotFoundException:
            with contextlib.suppress(exceptions.ResourceAlreadyExistsException):
                self.cwl_client.create_log_group(logGroupName=self.log_group_name)
            self.cwl_client.create_log_stream(logGroupName=self.log_group_name, logStreamName=stream)
        self._ready_streams.add(stream)


def cloudwatch_handler(
    *, log_group: str, region: str | None, endpoint_url: str | None, send_interval_s: float
) -> logging.Handler:
    """Build the CloudWatch handler, or a NullHandler and one warning: never stop start-up.

    Called by logging.config in each process; it makes no network call (the
    sending thread starts with the first record).
    """
    try:
        client = boto3.session.Session().client(
            "logs",
            region_name=region or None,
            endpoint_url=endpoint_url or None,
            config=Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3}),
        )
        return CloudWatchHandler(
            log_group_name=log_group,
            log_stream_name="{machine_name}/{process_id}",
            boto3_client=client,
            send_interval=send_interval_s,
        )
    except Exception as exc:
        _warn(f"CloudWatch logging is off ({type(exc).__name__}: {redact(str(exc))}); logs go on on stdout.")
        return logging.NullHandler()


def active_cloudwatch_handler() -> CloudWatchHandler | None:
    """The CloudWatch handler this process's logging ships through, if any."""
    return next((h for h in logging.getLogger().handlers if isinstance(h, CloudWatchHandler)), None)
