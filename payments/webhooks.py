"""POST /webhooks/provider: the provider's events in, verified before anything is read.

The provider signs each event by the Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`,
`webhook-signature`: HMAC-SHA256 over `{id}.{timestamp}.{body}`); the `standardwebhooks`
package checks it over the raw body, against each secret of PAYMENT_WEBHOOK_SECRET (several
while one is rotated), with its tolerance of five minutes either way. Only a verified body is
parsed; the service (payments.services.provider_events) stores it once and applies it.

Outside /api/v1: no API key (the signature is the authentication), no session, no CSRF. Every
answer is JSON: 200 (received, also a duplicate or an event it could not place: sending it again
would change nothing), 401 (not verified: nothing stored), 404 (PAYMENT_WEBHOOK_SECRET unset),
405, 413, 503 (the database: send again).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from standardwebhooks import Webhook, WebhookVerificationError

from core.events import log_event
from core.logs.request_id import current_request_id
from payments.services import provider_event_receive

logger = logging.getLogger("payments.webhooks")

MAX_BODY_BYTES = 64 * 1024
MAX_WEBHOOK_ID_LENGTH = 255
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")

# The library's messages, by the code this endpoint answers with.
UNVERIFIED_CODES = {
    "Missing required headers": "missing_signature_headers",
    "Invalid Signature Headers": "invalid_timestamp",
    "Message timestamp too old": "stale_timestamp",
    "Message timestamp too new": "stale_timestamp",
    "No matching signature found": "invalid_signature",
}


def _error(status: int, error_type: str, code: str, message: str, **headers: str) -> JsonResponse:
    body = {
        "error": {
            "type": error_type,
            "code": code,
            "message": message,
            "retryable": status >= 500,
            "request_id": current_request_id(),
        }
    }
    response = JsonResponse(body, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def unverified_reason(raw: bytes, headers: dict[str, str], secrets: tuple[str, ...]) -> str:
    """ "" if one of `secrets` signed `raw` with these headers within the tolerance; else the code
    of why not (the timestamp is checked first, the same for every secret)."""
    code = "invalid_signature"
    for secret in secrets:
        try:
            Webhook(secret).verify(raw, headers, json_parse=False)
        except WebhookVerificationError as exc:
            code = UNVERIFIED_CODES.get(str(exc), "invalid_signature")
            if code != "invalid_signature":
                return code
        except (ValueError, UnicodeDecodeError):
            # A signature entry that is no `v1,<base64>`, or a body that is not UTF-8: the
            # library raises these rather than its own error.
            code = "invalid_signature"
        else:
            return ""
    return code


@csrf_exempt
def provider_events(request: HttpRequest) -> JsonResponse:
    secrets: tuple[str, ...] = settings.PAYMENT_WEBHOOK_SECRET
    if not secrets:
        return _error(
            404,
            "not_found",
            "webhooks_not_configured",
            "Provider events are off: PAYMENT_WEBHOOK_SECRET is not set.",
        )
    if request.method != "POST":
        return _error(405, "invalid_request", "method_not_allowed", "Only POST.", Allow="POST")
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY_BYTES:
        return _error(413, "invalid_request", "payload_too_large", f"Over {MAX_BODY_BYTES} bytes.")
    raw = request.body
    headers = {name: request.headers.get(name, "") for name in SIGNATURE_HEADERS}
    code = unverified_reason(raw, headers, secrets)
    if code:
        log_event(
            logger,
            "provider.event_unverified",
            level=logging.WARNING,
            message=f"A provider event was refused, nothing stored: {code}",
            code=code,
            webhook_id=headers["webhook-id"][:MAX_WEBHOOK_ID_LENGTH],
            remote_addr=request.META.get("REMOTE_ADDR", ""),
        )
        return _error(401, "authentication_error", code, "The event's signature could not be verified.")
    webhook_id = headers["webhook-id"]
    if len(webhook_id) > MAX_WEBHOOK_ID_LENGTH:
        return _error(400, "invalid_request", "invalid_webhook_id", "webhook-id is over 255 characters.")
    sent_at = datetime.fromtimestamp(float(headers["webhook-timestamp"]), tz=UTC)
    try:
        received = provider_event_receive(webhook_id=webhook_id, sent_at=sent_at, body=_parsed(raw))
    except (OperationalError, InterfaceError):
        return _error(503, "service_unavailable", "database_busy", "Send the event again.", Retry_After="1")
    return JsonResponse(
        {
            "received": True,
            "duplicate": received.duplicate,
            "effect": received.effect,
            "detail": received.detail,
        }
    )


def _parsed(raw: bytes) -> Any:
    """The verified body as JSON, or None when it is none (stored and logged as unplaced)."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
