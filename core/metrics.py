"""Prometheus metrics, exposed at /metrics by the health app.

Counters and histograms are updated where things happen: the charge path, the
provider client, the database pool, and every HTTP request (count and latency by
route, method and status class, from health.middleware.RequestMetricsMiddleware).
The pool gauges and the breaker state are read from the pool and the breaker
when /metrics is scraped (StateCollector).

Under gunicorn with several workers, set PROMETHEUS_MULTIPROC_DIR to an empty
directory (gunicorn.conf.py wipes it at start and marks dead workers): every
worker then writes its values to files there and any worker's /metrics sums
them. A collector cannot see into the other workers, so in that mode each
worker writes its pool gauges and breaker state to those files every second
(a daemon thread started after the fork by gunicorn.conf.py); a scrape sums
the pool gauges over live workers (`livesum`) and shows the worst breaker
state (`livemax`).

One vocabulary: a charge's `outcome` is the name of the row of payments.outcomes that the
API answered with (`outcome_unknown` for a timeout, never a name of our own), and a refusal's
`code` is the API's `error.code`. core sits beneath payments, so the values are spelled out
here; tests/core/test_metrics.py keeps them equal to payments.outcomes and to the API.

No `_created` series (prometheus_client.disable_created_metrics): in single-process mode
every counter and histogram had one, in multiprocess mode none; now both look the same.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.events import log_event

logger = logging.getLogger("paymentsite.metrics")  # the name it had before the move: dashboards filter on it

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

disable_created_metrics()  # read when a scrape collects, so before or after the metrics below

# The answers (payments.outcomes) a charge sent to the provider can end in.
CHARGE_OUTCOMES = (
    "succeeded",
    "declined",
    "rejected",
    "outcome_unknown",
    "retry_scheduled",
    "needs_review",
    "canceled",
)
# The answers (payments.outcomes.refunds) a refund sent to the provider can end in.
REFUND_OUTCOMES = (
    "refund_succeeded",
    "refund_pending",
    "refund_outcome_unknown",
    "refund_failed",
    "refund_not_sent",
)
# The API's error.code of a 503 provider_unavailable: the charge was refused, nothing was sent.
CHARGE_REFUSAL_CODES = ("circuit_open", "provider_busy", "provider_misconfigured")
# An HTTP attempt's outcome, as in the API's attempt_log (payments.provider.Cause).
ATTEMPT_OUTCOMES = (
    "succeeded",
    "declined",
    "rejected",
    "provider_timeout",
    "connection_dropped",
    "request_in_flight",
    "unusable_answer",
    "connection_error",
    "provider_error",
    "rate_limited",
    "provider_misconfigured",
    "not_found",
    "pending",
)

CHARGES = Counter(
    "paymentsite_charges_total",
    "Charges sent to the provider, by the API's answer (payments.outcomes): "
    + ", ".join(CHARGE_OUTCOMES)
    + ".",
    ["outcome"],
)
CHARGE_REFUSALS = Counter(
    "paymentsite_charge_refusals_total",
    "Charges refused with 503 provider_unavailable before anything was sent, by the API's error.code: "
    + ", ".join(CHARGE_REFUSAL_CODES)
    + ".",
    ["code"],
)
REFUNDS = Counter(
    "paymentsite_refunds_total",
    "Refunds sent to the provider, by the API's answer (payments.outcomes.refunds): "
    + ", ".join(REFUND_OUTCOMES)
    + ".",
    ["outcome"],
)
for _outcome in CHARGE_OUTCOMES:  # every value from the start, at 0: rates need no special case
    CHARGES.labels(_outcome)
for _outcome in REFUND_OUTCOMES:
    REFUNDS.labels(_outcome)
for _code in CHARGE_REFUSAL_CODES:
    CHARGE_REFUSALS.labels(_code)

PROVIDER_REQUEST_SECONDS = Histogram(
    "paymentsite_provider_request_duration_seconds",
    "Duration of each HTTP attempt to the payment provider, by kind (charge, lookup, refund, "
    "refund_lookup) and the "
    "attempt's outcome as in the API's attempt_log: " + ", ".join(ATTEMPT_OUTCOMES) + ".",
    ["kind", "outcome"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13),
)
PROVIDER_RETRIES = Counter(
    "paymentsite_provider_retries_total",
    "HTTP attempts to the provider beyond the first of a call.",
    ["kind"],
)
POOL_EVENTS = Counter(
    "paymentsite_db_pool_events_total",
    "SQLAlchemy pool events: connect, checkout, checkin, invalidate, soft_invalidate.",
    ["alias", "event"],
)
POOL_EXHAUSTED = Counter(
    "paymentsite_db_pool_exhausted_total",
    "Checkouts that found no free connection within DB_ACQUIRE_TIMEOUT (answered 503).",
    ["alias"],
)
POOL_CHECKOUT_WAIT_SECONDS = Histogram(
    "paymentsite_db_pool_checkout_wait_seconds",
    "Time spent getting a connection from the pool (waiting, or opening a new one).",
    ["alias"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

HTTP_REQUESTS = Counter(
    "paymentsite_http_requests_total",
    "HTTP requests by route (URL pattern, `unmatched` or `static`), method and status class.",
    ["route", "method", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "paymentsite_http_request_duration_seconds",
    "Time from the request reaching Django to its response, by route, method and status class.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
# Any other method is counted as `other`, so that a client cannot add label values.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# Each (route, method, status class)'s two children, looked up once: `.labels()` checks and
# joins the values and takes the metric's lock on every call. The keys are bounded as the
# labels are (URL patterns, HTTP_METHODS, status classes); a dict's get and setdefault are
# atomic under the GIL, and two threads that look a child up at once get the same child.
_REQUEST_CHILDREN: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}


def observe_request(*, route: str, method: str, status_code: int, seconds: float) -> None:
    labels = (route, method if method in HTTP_METHODS else "other", f"{status_code // 100}xx")
    children = _REQUEST_CHILDREN.get(labels)
    if children is None:
        children = _REQUEST_CHILDREN.setdefault(
            labels, (HTTP_REQUESTS.labels(*labels), HTTP_REQUEST_SECONDS.labels(*labels))
        )
    count, duration = children
    count.inc()
    duration.observe(seconds)


POOL_GAUGES = {
    "size": "Connections the pool keeps (DB_CONNECTION_LIMIT).",
    "max_overflow": "Connections allowed beyond the pool size (DB_MAX_OVERFLOW).",
    "checked_out": "Connections in use by requests.",
    "checked_in": "Idle connections in the pool.",
    "overflow": "Connections open beyond the pool size.",
}
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
BREAKER_STATE_HELP = "Provider circuit breaker: 0 closed, 1 half-open, 2 open."
STATE_PUBLISH_INTERVAL_S = 1.0

PoolReader = Callable[[], Iterable[tuple[str, Mapping[str, int]]]]


class StateCollector(Collector):
    """Pool gauges and breaker state: read at scrape time, or published every second (multiprocess)."""

    def __init__(self, *, read_pools: PoolReader, read_breaker_state: Callable[[], str]) -> None:
        self.read_pools = read_pools
        self.read_breaker_state = read_breaker_state

    def _families(self) -> dict[str, GaugeMetricFamily]:
        return {
            name: GaugeMetricFamily(f"paymentsite_db_pool_{name}", help_text, labels=["alias"])
            for name, help_text in POOL_GAUGES.items()
        }

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Names only, so that registering does not read the pool or build the provider client.
        yield from self._families().values()
        yield GaugeMetricFamily("paymentsite_provider_circuit_state", BREAKER_STATE_HELP)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self._families()
        for alias, values in self.read_pools():
            for name, value in values.items():
                families[name].add_metric([alias], value)
        yield from families.values()
        yield GaugeMetricFamily(
            "paymentsite_provider_circuit_state",
            BREAKER_STATE_HELP,
            value=BREAKER_STATES[self.read_breaker_state()],
        )

    def publish(self) -> None:
        """Multiprocess mode: write this worker's values to the shared files."""
        for alias, values in self.read_pools():
            for name, value in values.items():
                _POOL_GAUGES[name].labels(alias).set(value)
        _BREAKER_STATE.set(BREAKER_STATES[self.read_breaker_state()])


if MULTIPROCESS:
    _POOL_GAUGES = {
        name: Gauge(f"paymentsite_db_pool_{name}", help_text, ["alias"], multiprocess_mode="livesum")
        for name, help_text in POOL_GAUGES.items()
    }
    _BREAKER_STATE = Gauge(
        "paymentsite_provider_circuit_state", BREAKER_STATE_HELP, multiprocess_mode="livemax"
    )

_state_collector: StateCollector | None = None


def register_state_collector(*, read_pools: PoolReader, read_breaker_state: Callable[[], str]) -> None:
    global _state_collector
    _state_collector = StateCollector(read_pools=read_pools, read_breaker_state=read_breaker_state)
    if not MULTIPROCESS:
        REGISTRY.register(_state_collector)


def start_state_publisher(interval_s: float = STATE_PUBLISH_INTERVAL_S) -> None:
    """Multiprocess mode: publish this worker's state every interval. Call it after the fork."""
    collector = _state_collector
    if not MULTIPROCESS or collector is None:
        return

    def publish_forever() -> None:
        while True:
            try:
                collector.publish()
            except Exception:  # a metrics hiccup must not end the thread
                log_event(logger, "metrics.publish_error", level=logging.ERROR, exc_info=True)
            time.sleep(interval_s)

    threading.Thread(target=publish_forever, name="metrics-state-publisher", daemon=True).start()


class WorkerFiles(Collector):
    """Every worker's metric files in `path`, summed as prometheus_client's MultiProcessCollector
    sums them, less any file still 0 bytes long.

    A worker creates a file the first time it touches a metric of a kind (`open`, then the
    truncate that sizes it), so for a moment the file exists and is empty; MultiProcessCollector
    then fails the whole scrape on it (`struct.error`, a 500 for /metrics: prometheus/client_python
    #1199, open upstream), and for good if the worker dies in that moment. An empty file holds no
    value yet, so leaving it out loses nothing. Everything else is the library's own merge.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Iterable[Metric]:
        files = [name for name in glob.glob(os.path.join(self.path, "*.db")) if _has_content(name)]
        return multiprocess.MultiProcessCollector.merge(files, accumulate=True)


def _has_content(name: str) -> bool:
    try:
        return os.path.getsize(name) > 0
    except FileNotFoundError:  # a dead worker's live gauge file, removed since the glob
        return False


def scrape_registry() -> CollectorRegistry:
    """The registry /metrics renders: this process's, or every worker's files in multiprocess mode."""
    if not MULTIPROCESS:
        return REGISTRY
    registry = CollectorRegistry()
    registry.register(WorkerFiles(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
    return registry
