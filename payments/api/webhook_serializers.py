"""Webhook endpoints and their deliveries, as the API takes and shows them."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

from payments.api.serializers import StrictBodySerializer, StrictCharField
from payments.models import DeliveryAttempt, EventDelivery, WebhookEndpoint
from payments.services.client_events import EVENT_TYPES
from payments.services.webhook_urls import URL_MAX_CHARS

URL_HELP = (
    "Where events are sent: https:// to a public address (plain http and private or loopback "
    "addresses only where EVENTS_ALLOW_PRIVATE_URLS is on); checked again at each delivery."
)
EVENTS_HELP = "The event types it is sent: " + "; ".join(
    f"`{name}`: {text}" for name, text in EVENT_TYPES.items()
)


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean only: "true" and 1 are refused, not read as True."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class EventTypesField(serializers.ListField):
    """A list of event types whose errors are a list of messages, as every field's are (the error
    body's `fields`), not DRF's dictionary by position."""

    def to_internal_value(self, data: Any) -> list[Any]:
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not isinstance(exc.detail, dict):
                raise
            raise serializers.ValidationError(
                [f"item {index}: {' '.join(map(str, errors))}" for index, errors in exc.detail.items()]
            ) from None


def event_types_field(*, required: bool = True) -> serializers.ListField:
    return EventTypesField(
        child=serializers.ChoiceField(choices=sorted(EVENT_TYPES)),
        allow_empty=False,
        max_length=len(EVENT_TYPES),
        required=required,
        help_text=EVENTS_HELP,
    )


class EndpointCreateSerializer(StrictBodySerializer):
    url = StrictCharField(max_length=URL_MAX_CHARS, trim_whitespace=False, help_text=URL_HELP)
    events = event_types_field()

    def validate_events(self, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class EndpointUpdateSerializer(EndpointCreateSerializer):
    url = StrictCharField(max_length=URL_MAX_CHARS, trim_whitespace=False, required=False, help_text=URL_HELP)
    events = event_types_field(required=False)
    enabled = StrictBooleanField(
        required=False,
        help_text="false stops deliveries (they wait); true starts them again and forgets failures.",
    )


class _StrictBodySchema(OpenApiSerializerExtension):
    """The request schemas refuse unknown fields, as `to_internal_value` does."""

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}


class EndpointCreateSchema(_StrictBodySchema):
    target_class = EndpointCreateSerializer


class EndpointUpdateSchema(_StrictBodySchema):
    target_class = EndpointUpdateSerializer


class WebhookEndpointSerializer(serializers.ModelSerializer):
    object = serializers.SerializerMethodField()
    events = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "object", "url", "events", "enabled", "disabled_reason", "created_at", "updated_at"]
        read_only_fields = fields

    def get_object(self, endpoint: WebhookEndpoint) -> str:
        return "webhook_endpoint"


class WebhookEndpointSecretSerializer(WebhookEndpointSerializer):
    """The endpoint with its signing secret: only in the answer that made the secret."""

    secret = serializers.CharField(
        help_text="whsec_…: shown this once. Verify each delivery's signature with it."
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = ["number", "started_at", "duration_ms", "http_status", "error"]
        read_only_fields = fields


class EventDeliverySerializer(serializers.ModelSerializer):
    object = serializers.SerializerMethodField()
    event = serializers.CharField(source="event_id")
    type = serializers.CharField(source="event.type")
    endpoint = serializers.CharField(source="endpoint_id")
    replay_of = serializers.CharField(source="replay_of_id", allow_null=True)
    attempt_log = DeliveryAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = EventDelivery
        fields = [
            "id",
            "object",
            "event",
            "type",
            "endpoint",
            "sequence",
            "status",
            "attempts",
            "next_attempt_at",
            "last_error",
            "replay_of",
            "created_at",
            "finished_at",
            "attempt_log",
        ]
        read_only_fields = fields

    def get_object(self, delivery: EventDelivery) -> str:
        return "event_delivery"


EventDeliveryPage = inline_serializer(
    "EventDeliveryPage",
    fields={
        "next": serializers.URLField(
            allow_null=True, help_text="The older deliveries; null on the last page."
        ),
        "previous": serializers.URLField(
            allow_null=True, help_text="The newer ones; null on the first page."
        ),
        "results": EventDeliverySerializer(many=True),
    },
)
