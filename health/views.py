from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from health import selectors
from paymentsite import metrics as app_metrics

HEALTH_JSON = "application/health+json"


@never_cache
def live(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Touches neither the database nor the provider."""
    return JsonResponse({"status": "pass"}, content_type=HEALTH_JSON)


@never_cache
def health(request: HttpRequest) -> JsonResponse:
    """Readiness and detail: database, pool, breaker and provider probe; 503 only when the database fails."""
    report = selectors.health_report()
    selectors.note_status_change(report)
    return JsonResponse(report.as_json(), status=report.http_status, content_type=HEALTH_JSON)


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; expose it on the internal network only."""
    return HttpResponse(generate_latest(app_metrics.scrape_registry()), content_type=CONTENT_TYPE_LATEST)
