"""Under /api/, the two answers Django would give as HTML pages get the API's one error body.

- A path no URL pattern matches (`/api/v1/nope`, `/api/v1/charges/a/b`, `POST /api/v1/charges/`):
  404 `not_found`.
- A Host header that DJANGO_ALLOWED_HOSTS refuses: 400 `invalid_request` / `invalid_fields`, with
  `fields.Host`, as for any other refused header.

A middleware rather than Django's handler404/handler400: with DJANGO_DEBUG Django answers both
with its debug pages (the one for a refused host lists the settings) and never calls the handlers.
It sits before every middleware that reads the host (SecurityMiddleware's redirect to HTTPS,
CommonMiddleware), after the probes (which answer whatever the Host). Other paths keep Django's pages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve

from payments.api.exceptions import error_body

API_PREFIX = "/api/"
NOT_FOUND_MESSAGE = "There is no API endpoint at this path; see /api/docs/."
TRAILING_SLASH_MESSAGE = "There is no API endpoint at this path: the API's paths have no trailing slash."
BAD_HOST_MESSAGE = "This service does not answer to the host name in the Host header."


def _is_api_path(path: str) -> bool:
    return path == API_PREFIX.rstrip("/") or path.startswith(API_PREFIX)


def _answered(body: dict, status: int) -> JsonResponse:
    response = JsonResponse(body, status=status)
    # Logged already (django.security for the host, django.request's "Not Found" for the path),
    # not a second time by django.request.
    response._has_been_logged = True  # read by django.utils.log.log_response
    return response


def _resolves(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


class APIErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not _is_api_path(request.path_info):
            return self.get_response(request)
        try:
            request.get_host()
        except DisallowedHost as refused:
            # What Django logs for a refused host, on the same logger and level.
            logging.getLogger("django.security.DisallowedHost").error(
                str(refused), extra={"status_code": 400, "request": request}
            )
            body = error_body(
                error_type="invalid_request",
                code="invalid_fields",
                message=f"Host: {BAD_HOST_MESSAGE}",
                retryable=False,
                fields={"Host": [BAD_HOST_MESSAGE]},
            )
            return _answered(body, status=400)
        response = self.get_response(request)
        if response.status_code != 404 or getattr(request, "resolver_match", None) is not None:
            return response  # a view's own answer (the API's views already answer JSON)
        path = request.path_info
        slashless = path.endswith("/") and path != API_PREFIX and _resolves(path.rstrip("/"))
        body = error_body(
            error_type="not_found",
            code="not_found",
            message=TRAILING_SLASH_MESSAGE if slashless else NOT_FOUND_MESSAGE,
            retryable=False,
        )
        return _answered(body, status=404)
