"""Events out: the endpoints API clients register, the outbox and its deliveries.

A `ClientEvent` is written in the same database transaction as the state change it reports
(payments.services.client_events), with one `EventDelivery` per enabled endpoint that takes
its type, numbered per endpoint (`sequence`): the delivery loop (payments.services.delivery)
sends an endpoint's deliveries in that order, one at a time.
"""

from __future__ import annotations

import base64
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


def new_endpoint_id() -> str:
    return f"we_{uuid.uuid4().hex}"


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def new_delivery_id() -> str:
    return f"dlv_{uuid.uuid4().hex}"


def new_endpoint_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class WebhookEndpoint(models.Model):
    """A URL of an API client's, told of the event types it lists.

    The secret is kept as it is (not hashed): every delivery is signed with it. While a rotation's
    overlap lasts, `previous_secret` signs too, so a client can switch over at its own pace.
    """

    id = models.CharField(primary_key=True, max_length=40, default=new_endpoint_id, editable=False)
    client = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.CharField(max_length=2000)
    events = models.JSONField(default=list, help_text="The event types it is sent.")
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    secret = models.CharField(max_length=100, default=new_endpoint_secret, editable=False)
    previous_secret = models.CharField(max_length=100, blank=True, editable=False)
    previous_secret_until = models.DateTimeField(null=True, blank=True, editable=False)
    # The last delivery's number: the next one written gets last_sequence + 1 (under this row's lock).
    last_sequence = models.PositiveBigIntegerField(default=0, editable=False)
    # The delivery lease: one worker at a time sends to an endpoint (its ordering), until it
    # gives the lease back or the lease is older than EVENTS_LEASE_S by the database's clock.
    lease_token = models.CharField(max_length=32, blank=True, editable=False)
    leased_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When its deliveries began failing (cleared by a success): after EVENTS_DISABLE_AFTER_S of
    # nothing but failures, or EVENTS_DISABLE_AFTER_FAILURES in a row, it is disabled.
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.id} {self.url}"


class ClientEvent(models.Model):
    """One state change an API client is told of: the outbox's row (its `payload` is the body)."""

    id = models.CharField(primary_key=True, max_length=40, default=new_event_id, editable=False)
    client = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="client_events"
    )
    type = models.CharField(max_length=64)
    transaction = models.ForeignKey(
        "payments.Transaction", on_delete=models.PROTECT, null=True, blank=True, related_name="client_events"
    )
    refund = models.ForeignKey(
        "payments.Refund", on_delete=models.PROTECT, null=True, blank=True, related_name="client_events"
    )
    # {"id", "type", "created", "data": {"object": <the charge or refund as the API showed it then>}}
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["client", "-created_at"], name="event_client_created")]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class EventDelivery(models.Model):
    """One event to send to one endpoint, tried until it succeeds or is given up on."""

    class Status(models.TextChoices):
        PENDING = "pending"  # to send (or being sent: the endpoint's lease says by whom)
        SUCCEEDED = "succeeded"  # the endpoint answered 2xx
        FAILED = "failed"  # given up on after EVENTS_RETRY_FOR_S: the endpoint's next one goes

    id = models.CharField(primary_key=True, max_length=40, default=new_delivery_id, editable=False)
    event = models.ForeignKey(ClientEvent, on_delete=models.PROTECT, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    sequence = models.PositiveBigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.CharField(max_length=500, blank=True)
    replay_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="replays"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["endpoint", "sequence"]
        permissions = [("replay_delivery", "Can replay event deliveries")]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "sequence"], name="unique_delivery_sequence"),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="delivery_status_due"),
            models.Index(fields=["endpoint", "status", "sequence"], name="delivery_endpoint_head"),
        ]

    def __str__(self) -> str:
        return f"{self.event.type} #{self.sequence} to {self.endpoint_id}: {self.status}"


class DeliveryAttempt(models.Model):
    """One HTTP request of a delivery: append-only."""

    delivery = models.ForeignKey(EventDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.http_status or self.error}"
