"""A client's webhook endpoints: register, change, remove, rotate the secret; replay a delivery.

The URL is checked (payments.services.webhook_urls) at registration and whenever it changes,
with no database connection or row lock held across its name lookup, and again at each
delivery. A secret is shown once, in the answer that made it.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.db import release_db_connection
from core.events import log_event
from payments.errors import InvalidRequest
from payments.models import EventDelivery, WebhookEndpoint
from payments.models.client_events import new_endpoint_secret
from payments.services import client_events, webhook_urls

logger = logging.getLogger("payments.services")  # one logger name for all the services


def _checked_url(url: str) -> str:
    release_db_connection()  # the name lookup is a network call
    try:
        webhook_urls.check_url(url)
    except webhook_urls.URLRefused as exc:
        raise InvalidRequest(str(exc), code="url_not_allowed") from None
    return url


def endpoint_create(*, client: Any, url: str, events: list[str]) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.create(client=client, url=_checked_url(url), events=events)
    log_event(
        logger,
        "webhook.endpoint_created",
        message="Webhook endpoint registered",
        endpoint_id=endpoint.pk,
        client=client.get_username(),
        events=events,
    )
    return endpoint


def endpoint_update(
    endpoint: WebhookEndpoint,
    *,
    url: str | None = None,
    events: list[str] | None = None,
    enabled: bool | None = None,
) -> WebhookEndpoint:
    """Change what was given; enabling it again forgets its failures (its deliveries go on)."""
    if url is not None and url != endpoint.url:
        _checked_url(url)  # before the row's lock: the lookup may take EVENTS_TIMEOUT_MS
    with transaction.atomic():
        row = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        if url is not None:
            row.url = url  # checked above, or the one it had (checked when it was set)
        if events is not None:
            row.events = events
        if enabled is not None and enabled != row.enabled:
            row.enabled = enabled
            row.disabled_reason = "" if enabled else "disabled by the client"
            row.failing_since, row.consecutive_failures = None, 0
        row.save()
    return row


def endpoint_delete(endpoint: WebhookEndpoint) -> None:
    """Gone with its deliveries (the events stay, in the outbox)."""
    endpoint.delete()


def endpoint_rotate(endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """A new secret; the one it replaces keeps signing for EVENTS_SECRET_OVERLAP_S."""
    with transaction.atomic():
        row = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        row.previous_secret = row.secret
        row.previous_secret_until = timezone.now() + timedelta(seconds=settings.EVENTS_SECRET_OVERLAP_S)
        row.secret = new_endpoint_secret()
        row.save()
    log_event(logger, "webhook.secret_rotated", message="Webhook endpoint secret rotated", endpoint_id=row.pk)
    return row


def signing_secrets(endpoint: WebhookEndpoint) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous one while its
    overlap lasts (a signature per secret in webhook-signature)."""
    secrets = [endpoint.secret]
    if (
        endpoint.previous_secret
        and endpoint.previous_secret_until
        and endpoint.previous_secret_until > timezone.now()
    ):
        secrets.append(endpoint.previous_secret)
    return secrets


def delivery_replay(delivery: EventDelivery, *, actor: str) -> EventDelivery:
    """Send the delivery's event again: a new delivery, the endpoint's last in order (its
    webhook-id is the event's, as every delivery of it)."""
    with transaction.atomic():
        replay = client_events.enqueue(delivery.event, delivery.endpoint_id, replay_of=delivery)
    if replay is None:
        raise InvalidRequest("The endpoint is gone.", code="endpoint_gone")
    log_event(
        logger,
        "webhook.delivery_replayed",
        message=f"Delivery replayed by {actor}",
        delivery_id=delivery.pk,
        replay_id=replay.pk,
        endpoint_id=delivery.endpoint_id,
        event_id=delivery.event_id,
        actor=actor,
    )
    return replay
