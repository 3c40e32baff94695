from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache


@never_cache
def live(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Touches neither the database nor the provider."""
    return JsonResponse({"status": "pass"}, content_type="application/health+json")
