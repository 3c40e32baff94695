"""Refunds as the API takes and shows them."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from payments.api.serializers import (
    DESCRIPTION_SCHEMA,
    DescriptionField,
    ErrorSerializer,
    FieldsBuiltOnce,
    NextStepSerializer,
    StrictBodySerializer,
    StrictIntegerField,
    TransactionDetailSerializer,
)
from payments.errors import refund_error_for
from payments.models import Refund
from payments.refund_transitions import refund_next_step

REFUND_NOTE_MAX_CHARS = 500


class RefundCreateSerializer(StrictBodySerializer):
    amount = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=settings.PAYMENT_MAX_AMOUNT,
        help_text="In the charge's currency's minor unit; all that is left to refund when omitted.",
    )
    reason = serializers.ChoiceField(choices=Refund.Reason.choices)
    note = DescriptionField(required=False, default="", allow_blank=True, max_length=REFUND_NOTE_MAX_CHARS)


class RefundCreateSchema(OpenApiSerializerExtension):
    """The request schema refuses unknown fields, as `to_internal_value` does (and states the
    note once: see payments.api.serializers.ChargeCreateSchema)."""

    target_class = RefundCreateSerializer

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        properties = {**schema["properties"], "note": {**DESCRIPTION_SCHEMA, "default": ""}}
        return {**schema, "properties": properties, "additionalProperties": False}


class RefundSerializer(FieldsBuiltOnce):
    """A refund as the API shows it; `charge` is the charge's id."""

    object = serializers.SerializerMethodField()
    charge = serializers.UUIDField(source="transaction_id")
    error = serializers.SerializerMethodField()
    needs_review = serializers.SerializerMethodField()
    next_step = serializers.SerializerMethodField()

    class Meta:
        model = Refund
        fields = [
            "id",
            "object",
            "charge",
            "amount",
            "currency",
            "status",
            "reason",
            "note",
            "error",
            "provider_refund_id",
            "idempotency_key",
            "attempts",
            "needs_review",
            "next_step",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_object(self, refund: Refund) -> str:
        return "refund"

    def get_needs_review(self, refund: Refund) -> bool:
        return bool(refund.review_reason)

    @extend_schema_field(NextStepSerializer())
    def get_next_step(self, refund: Refund) -> dict[str, Any]:
        return refund_next_step(refund)

    @extend_schema_field(ErrorSerializer(allow_null=True))
    def get_error(self, refund: Refund) -> dict[str, str] | None:
        """Null once succeeded, while pending; else its row of the refund answers, as the
        refund answered it (payments.errors.refund_error_for)."""
        if refund.status == Refund.Status.PENDING:
            return None
        error = refund_error_for(refund, charge=refund.transaction)
        if error is None:
            return None
        return {"type": error.error_type, "code": error.code, "message": error.message, **error.extra}


@extend_schema_serializer(component_name="TransactionDetail")
class ChargeDetailSerializer(TransactionDetailSerializer):
    """One charge with its attempt log (its refunds' attempts among them) and every refund."""

    refunds = RefundSerializer(many=True, read_only=True)

    class Meta(TransactionDetailSerializer.Meta):
        fields = [*TransactionDetailSerializer.Meta.fields, "refunds"]
        read_only_fields = fields
