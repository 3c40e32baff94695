"""Two middleware near the top of MIDDLEWARE: request metrics, and probes answered before host checks.

Written here rather than taken from django-prometheus: that package adds an
app, a pair of middleware and some twenty metric families labelled with the
exact status code and the view's dotted path; the service needs two families
labelled by URL pattern and status class, beside its own metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import resolve

from core import metrics
from health.access import warn_if_unconfigured

# Exact paths: anything else goes through the whole chain, ALLOWED_HOSTS included.
PROBE_PATHS = frozenset({"/health/live", "/health/ready"})
UNMATCHED = "unmatched"
STATIC = "static"


def route_label(request: HttpRequest) -> str:
    """The URL pattern that served the request (`/api/v1/charges/<uuid:pk>`), never the raw path."""
    match = getattr(request, "resolver_match", None)
    if match is not None:
        return "/" + match.route
    if request.path_info.startswith("/" + settings.STATIC_URL.lstrip("/")):
        return STATIC  # WhiteNoise answers before URL resolution
    return UNMATCHED  # 404s, refused hosts, anything no pattern matched


class RequestMetricsMiddleware:
    """Counts and times every request by route, method and status class (core.metrics)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        metrics.observe_request(
            route=route_label(request),
            method=request.method or "",
            status_code=response.status_code,
            seconds=time.perf_counter() - started,
        )
        return response


class ProbeMiddleware:
    """Answers /health/live and /health/ready whatever the Host header.

    A kubelet probes the pod IP, which ALLOWED_HOSTS refuses (400) in
    CommonMiddleware's `request.get_host()`; SecurityMiddleware may also redirect
    plain HTTP. Placed before both, this calls the two views directly. They read
    nothing from the request and answer pass/fail only.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        warn_if_unconfigured()  # the middleware is built once per serving process, at start-up

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info not in PROBE_PATHS:
            return self.get_response(request)
        match = resolve(request.path_info)
        request.resolver_match = match
        return match.func(request, *match.args, **match.kwargs)
