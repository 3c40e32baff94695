from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache
from prometheus_client.exposition import choose_encoder

from core import metrics as app_metrics
from health import report as health_report
from health.access import Access, operator_access

HEALTH_JSON = "application/health+json"


UNAUTHORIZED_MESSAGE = "Send METRICS_TOKEN as `Authorization: Bearer <token>`."


def _challenge(response: HttpResponse, access: Access) -> HttpResponse:
    error = ', error="invalid_token"' if access is Access.INVALID else ""
    response["WWW-Authenticate"] = f'Bearer realm="operator"{error}'
    return response


def _unauthorized(access: Access) -> HttpResponse:
    return _challenge(
        HttpResponse(UNAUTHORIZED_MESSAGE + "\n", status=401, content_type="text/plain"), access
    )


def _health_response(body: dict, *, status: int) -> JsonResponse:
    """An answer in the draft's format. A 503 here is the answer itself, not a crash: it is
    kept off `django.request`'s ERROR lines, which README's "Unhandled errors" alarm counts."""
    response = JsonResponse(body, status=status, content_type=HEALTH_JSON)
    if status >= 500:
        response._has_been_logged = True  # read by django.utils.log.log_response
    return response


@never_cache
def live(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Touches neither the database nor the provider."""
    return JsonResponse({"status": "pass"}, content_type=HEALTH_JSON)


@never_cache
def ready(request: HttpRequest) -> JsonResponse:
    """Readiness: the database answers and the pool has a free connection. Pass/fail only."""
    status = health_report.readiness()
    return _health_response({"status": status}, status=503 if status == health_report.FAIL else 200)


@never_cache
def health(request: HttpRequest) -> HttpResponse:
    """Database, pool, breaker and provider probe; 503 only when the database fails.

    The detail is for operators (METRICS_TOKEN); a signed-in user of the payment
    page gets what its badge reads; anyone else gets pass/fail.
    """
    access = operator_access(request)
    if access is Access.INVALID:
        # Still the draft's format, so that a monitor with a stale token reads a `fail` it can show.
        wrong = {"status": health_report.FAIL, "output": f"Wrong bearer token. {UNAUTHORIZED_MESSAGE}"}
        return _challenge(_health_response(wrong, status=401), access)
    report = health_report.health_report()
    health_report.note_status_change(report)
    user = getattr(request, "user", None)
    if access is Access.OPERATOR:
        body = report.as_json()
    elif user is not None and user.is_authenticated:
        body = report.as_badge_json()
    else:
        body = report.as_public_json()
    return _health_response(body, status=report.http_status)


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, or OpenMetrics for a scraper that asks for it
    (`Accept: application/openmetrics-text`), for a caller with METRICS_TOKEN (see health.access)."""
    access = operator_access(request)
    if access is Access.UNCONFIGURED:
        return HttpResponse(
            "METRICS_TOKEN is not set: /metrics is closed (README.md, Health and metrics).\n",
            status=403,
            content_type="text/plain",
        )
    if access is not Access.OPERATOR:
        return _unauthorized(access)
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encode(app_metrics.scrape_registry()), content_type=content_type)
    patch_vary_headers(response, ["Accept"])
    return response
