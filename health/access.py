"""Who may read the operator endpoints' detail: a caller sending METRICS_TOKEN as a bearer token.

A token rather than a second bind address: the service keeps one port, so it
works unchanged behind a load balancer, a Kubernetes Service or a sidecar, and
Prometheus sends it with `authorization: credentials_file`. Compared in constant
time (hmac.compare_digest).

Without METRICS_TOKEN the detail is open in DEBUG (a developer's machine) and
closed in production: /metrics answers 403 and /health/ gives pass/fail only;
`metrics.token_missing` is logged once per process at start-up.
"""

from __future__ import annotations

import enum
import hmac
import logging
import threading

from django.conf import settings
from django.http import HttpRequest

from core.events import log_event

logger = logging.getLogger(__name__)


class Access(enum.Enum):
    OPERATOR = "operator"  # the right bearer token, or DEBUG without a token
    ANONYMOUS = "anonymous"  # no bearer token
    INVALID = "invalid"  # a bearer token, and the wrong one
    UNCONFIGURED = "unconfigured"  # production without METRICS_TOKEN: nobody gets the detail


def operator_access(request: HttpRequest) -> Access:
    token = settings.METRICS_TOKEN
    if not token:
        return Access.OPERATOR if settings.DEBUG else Access.UNCONFIGURED
    scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return Access.ANONYMOUS
    if hmac.compare_digest(supplied.strip().encode(), token.encode()):
        return Access.OPERATOR
    return Access.INVALID


_warned = threading.Event()


def warn_if_unconfigured() -> None:
    """At start-up (once per process): say that production without METRICS_TOKEN closes /metrics."""
    if settings.METRICS_TOKEN or settings.DEBUG or _warned.is_set():
        return
    _warned.set()
    log_event(
        logger,
        "metrics.token_missing",
        level=logging.WARNING,
        message=(
            "METRICS_TOKEN is not set: /metrics answers 403 and /health/ shows pass/fail only; "
            "set it to a random string of 16 or more characters and give it to Prometheus"
        ),
    )
