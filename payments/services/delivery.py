"""Delivering events: one delivery at a time, per endpoint in sequence, safe on many hosts.

`deliver_next` takes an endpoint whose first undelivered event is due, with a lease (a
conditional UPDATE of the endpoint's row: one worker per endpoint, so its events go in order),
sends that one delivery with no database connection held, and records the answer under the
endpoint's row lock, if the lease is still its own. A lease older than `lease_s()` (by the
database's clock) was left by a worker that died: another may take it, so a frozen worker can
make an endpoint receive an event twice (deliveries are at least once), never skip one.

A delivery is a Standard Webhooks request (`standardwebhooks` signs it, with every secret the
endpoint has now), to the address the URL check resolved (payments.services.webhook_urls),
with a short timeout and no redirect followed; over https the certificate is always verified,
against EVENTS_CA_BUNDLE or the bundle requests uses (certifi's). urllib3's timeouts bound each
socket read, not the request, so the request has a hard wall-clock bound too, the provider
client's (payments.provider.deadline: its socket is shut down at `request_deadline_s()`): an
endpoint that trickles its answer cannot keep it open past the lease. A failure is tried again,
backing off, for EVENTS_RETRY_FOR_S after the delivery was written, then given up (the
endpoint's next event goes). An endpoint failing for that long, or EVENTS_DISABLE_AFTER_FAILURES
times in a row, is disabled (`webhook.endpoint_disabled`). urllib3 rather than requests: it connects to the
checked address while naming the host in TLS and the Host header.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3
from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, Exists, ExpressionWrapper, OuterRef, Q
from django.utils import timezone
from requests import certs
from standardwebhooks import Webhook

from core.db import DatabaseNow, release_db_connection
from core.events import log_event
from payments.models import DeliveryAttempt, EventDelivery, WebhookEndpoint
from payments.provider import deadline
from payments.services import webhook_urls
from payments.services.claims import ActionOutcome, ActionResult
from payments.services.webhook_endpoints import signing_secrets

logger = logging.getLogger("payments.services")  # one logger name for all the services

Status = EventDelivery.Status
CANDIDATES = 20
RETRY_MAX_DELAY_S = 3600
ANSWER_READ_BYTES = 1024


def request_deadline_s() -> float:
    """One request's hard bound, from its connect to its answer: the connect and read timeouts."""
    return 2 * settings.EVENTS_TIMEOUT_MS / 1000


def lease_s() -> float:
    """Longer than any one delivery can take: the URL's name lookup and the request, each within
    its bound, with room for the answer's recording."""
    return webhook_urls.lookup_s() + request_deadline_s() + 30


def due_heads() -> Any:
    """Each enabled endpoint's first undelivered event, where it is due."""
    earlier = EventDelivery.objects.filter(
        endpoint_id=OuterRef("endpoint_id"), status=Status.PENDING, sequence__lt=OuterRef("sequence")
    )
    return (
        EventDelivery.objects.filter(
            status=Status.PENDING, next_attempt_at__lte=timezone.now(), endpoint__enabled=True
        )
        .exclude(Exists(earlier))
        .order_by("next_attempt_at")
    )


def _lease(endpoint_id: str) -> str | None:
    token = uuid.uuid4().hex
    stale = ExpressionWrapper(DatabaseNow() - timedelta(seconds=lease_s()), output_field=DateTimeField())
    free = Q(lease_token="") | Q(leased_at__lt=stale)
    taken = WebhookEndpoint.objects.filter(free, pk=endpoint_id, enabled=True).update(
        lease_token=token, leased_at=DatabaseNow()
    )
    return token if taken else None


def _release(endpoint_id: str, token: str) -> None:
    WebhookEndpoint.objects.filter(pk=endpoint_id, lease_token=token).update(lease_token="", leased_at=None)


def deliver_next(*, skip_ids: Collection[Any] = (), actor: str = "") -> ActionResult | None:
    """Send the next due delivery of an endpoint no other worker is sending to; None: none is due."""
    for candidate in due_heads().exclude(pk__in=list(skip_ids))[:CANDIDATES]:
        token = _lease(candidate.endpoint_id)
        if token is None:
            continue
        # Under the lease, the endpoint's head again: another worker may have sent it meanwhile.
        head = (
            EventDelivery.objects.select_related("event", "endpoint")
            .filter(endpoint_id=candidate.endpoint_id, status=Status.PENDING)
            .order_by("sequence")
            .first()
        )
        if head is None or head.next_attempt_at > timezone.now():
            _release(candidate.endpoint_id, token)
            continue
        return send(head, token)
    return None


def send(delivery: EventDelivery, token: str) -> ActionResult:
    endpoint, event = delivery.endpoint, delivery.event
    body = json.dumps(event.payload, separators=(",", ":"), ensure_ascii=False)
    secrets = signing_secrets(endpoint)
    release_db_connection()  # never held while a client's endpoint takes its time
    started, clock = timezone.now(), time.monotonic()
    http_status, error = post(endpoint.url, msg_id=event.id, body=body, secrets=secrets)
    duration_ms = round((time.monotonic() - clock) * 1000)
    return record(
        delivery, token, http_status=http_status, error=error, started=started, duration_ms=duration_ms
    )


def headers_for(
    msg_id: str, body: str, secrets: list[str], *, host: str, port: int, scheme: str
) -> dict[str, str]:
    now = datetime.now(UTC)
    default_port = 443 if scheme == "https" else 80
    host_header = f"[{host}]" if ":" in host else host
    return {
        "host": host_header if port == default_port else f"{host_header}:{port}",
        "content-type": "application/json",
        "user-agent": "Paymentsite-Webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(Webhook(secret).sign(msg_id, now, body) for secret in secrets),
    }


def post(url: str, *, msg_id: str, body: str, secrets: list[str]) -> tuple[int | None, str]:
    """(HTTP status, "") on an answer; (status or None, why) when it is not a success."""
    try:
        target = webhook_urls.check_url(url)
    except webhook_urls.URLRefused as exc:
        return None, f"refused: {exc}"[:500]
    assert target is not None
    seconds = settings.EVENTS_TIMEOUT_MS / 1000
    options: dict[str, Any] = {
        "timeout": urllib3.Timeout(connect=seconds, read=seconds),
        "retries": False,
        "maxsize": 1,
    }
    if target.scheme == "https":
        pool: urllib3.HTTPConnectionPool = deadline.BoundedHTTPSConnectionPool(
            target.address,
            target.port,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=settings.EVENTS_CA_BUNDLE or certs.where(),
            **options,
        )
    else:
        pool = deadline.BoundedHTTPConnectionPool(target.address, target.port, **options)
    headers = headers_for(msg_id, body, secrets, host=target.host, port=target.port, scheme=target.scheme)
    watch = deadline.start_attempt(request_deadline_s())
    try:
        response = pool.urlopen(
            "POST", target.path, body=body.encode(), headers=headers, redirect=False, preload_content=False
        )
        with contextlib.suppress(urllib3.exceptions.HTTPError):  # the status line is the answer:
            response.read(ANSWER_READ_BYTES)  # a body cut short changes nothing
        response.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        if watch.cut:
            return None, f"no answer within {request_deadline_s():g} s: the connection was closed"
        return None, f"{type(exc).__name__}: {exc}"[:500]
    finally:
        deadline.finish_attempt()
        pool.close()
    if 200 <= response.status < 300:
        return response.status, ""
    if 300 <= response.status < 400:
        return response.status, f"HTTP {response.status}: a redirect, not followed"
    return response.status, f"HTTP {response.status}"


def retry_delay_s(attempts: int) -> float:
    base_s = settings.EVENTS_RETRY_BASE_MS / 1000
    return min(RETRY_MAX_DELAY_S, base_s * 2 ** max(0, attempts - 1)) * random.uniform(0.9, 1.1)


def record(
    delivery: EventDelivery,
    token: str,
    *,
    http_status: int | None,
    error: str,
    started: datetime,
    duration_ms: int,
) -> ActionResult:
    """The answer, under the endpoint's lock, if the lease is still this worker's; the lease is given back."""
    now = timezone.now()
    disabled = given_up = False
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().filter(pk=delivery.endpoint_id).first()
        if endpoint is None or endpoint.lease_token != token:
            return ActionResult(
                delivery.pk, ActionOutcome.SKIPPED, delivery.status, "another worker took the endpoint over"
            )
        row = EventDelivery.objects.select_for_update().get(pk=delivery.pk)
        row.attempts += 1
        DeliveryAttempt.objects.create(
            delivery=row,
            number=row.attempts,
            started_at=started,
            duration_ms=duration_ms,
            http_status=http_status,
            error=error,
        )
        if not error:
            row.status, row.finished_at, row.last_error = Status.SUCCEEDED, now, ""
            endpoint.failing_since, endpoint.consecutive_failures = None, 0
        else:
            row.last_error = error
            endpoint.failing_since = endpoint.failing_since or started
            endpoint.consecutive_failures += 1
            retry_for = timedelta(seconds=settings.EVENTS_RETRY_FOR_S)
            if now - row.created_at >= retry_for:
                row.status, row.finished_at, given_up = Status.FAILED, now, True
            else:
                row.next_attempt_at = now + timedelta(seconds=retry_delay_s(row.attempts))
            limit = settings.EVENTS_DISABLE_AFTER_FAILURES
            if (
                limit and endpoint.consecutive_failures >= limit
            ) or now - endpoint.failing_since >= retry_for:
                endpoint.enabled, disabled = False, True
                endpoint.disabled_reason = (
                    f"disabled after {endpoint.consecutive_failures} failed deliveries in a row, "
                    f"failing since {endpoint.failing_since.isoformat()}"
                )[:300]
        endpoint.lease_token, endpoint.leased_at = "", None
        endpoint.save()
        row.save()
    _log_recorded(row, endpoint, given_up=given_up, disabled=disabled)
    outcome = ActionOutcome.SUCCEEDED if not error else ActionOutcome.FAILED
    return ActionResult(row.pk, outcome, row.status, error)


def _log_recorded(row: EventDelivery, endpoint: WebhookEndpoint, *, given_up: bool, disabled: bool) -> None:
    fields = {
        "delivery_id": row.pk,
        "event_id": row.event_id,
        "endpoint_id": endpoint.pk,
        "sequence": row.sequence,
        "attempt": row.attempts,
    }
    if row.status == Status.SUCCEEDED:
        log_event(logger, "webhook.delivered", message="Event delivered", **fields)
    elif given_up:
        log_event(
            logger,
            "webhook.delivery_given_up",
            level=logging.ERROR,
            message=f"Delivery given up after {row.attempts} attempts: {row.last_error}",
            error=row.last_error,
            **fields,
        )
    else:
        log_event(
            logger,
            "webhook.delivery_failed",
            level=logging.WARNING,
            message=f"Delivery failed ({row.last_error}); tried again at {row.next_attempt_at.isoformat()}",
            error=row.last_error,
            next_attempt_at=row.next_attempt_at.isoformat(),
            **fields,
        )
    if disabled:
        log_event(
            logger,
            "webhook.endpoint_disabled",
            level=logging.ERROR,
            message=f"Webhook endpoint disabled ({endpoint.disabled_reason}): the client must enable it",
            endpoint_id=endpoint.pk,
            client_id=endpoint.client_id,
            failures=endpoint.consecutive_failures,
        )
