from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.logs.redaction import note_card_source
from payments.currencies import MINOR_UNIT_DIGITS
from payments.errors import error_for
from payments.models import PaymentAttempt, Refund, Transaction
from payments.transitions import NEXT_ACTIONS, next_step

# The provider takes a card token: `tok_` and at least one more character (fakeprovider/protocol.py
# speaks its contract); these are what a token is made of, 255 characters at most.
SOURCE_PATTERN = re.compile(r"^tok_[A-Za-z0-9_\-]{1,251}$")
METADATA_MAX_KEYS = 20
METADATA_MAX_KEY_CHARS = 40
METADATA_MAX_VALUE_CHARS = 500
# A number is one a double holds (JSON's numbers have no limit; 1e400 is Python's inf).
METADATA_MAX_NUMBER = sys.float_info.max
UNSTORABLE_TEXT = (
    "`{path}` contains text that cannot be stored (a lone surrogate such as \\udfff); send valid Unicode."
)


def _unstorable(value: Any, path: str) -> Iterator[str]:
    """The paths (`metadata.order`) of the strings, keys included, that no UTF-8 column can store.

    JSON's `"\\udfff"` escape reaches Python as a lone surrogate, which has no UTF-8 form: MariaDB's
    JSON check refuses it, no driver can send it in a text column, and no answer could echo it. It
    is the only such text (NUL is storable; DRF refuses it in CharFields anyway).
    """
    if isinstance(value, str):
        if not _is_storable(value):
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{_printable(key)}" if path else _printable(key)
            if not _is_storable(str(key)):
                yield name
            yield from _unstorable(item, name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unstorable(item, f"{path}[{index}]")


def _is_storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(key: Any) -> str:
    """A key as an error message may show it: a lone surrogate as its escape (`\\udfff`)."""
    return str(key).encode("utf-8", "backslashreplace").decode("utf-8")


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only: "1999", 19.99 and true are refused, not coerced.

    1999.0 is one: JSON Schema (2020-12, the schema's dialect) calls any number with no fractional
    part an integer, so a client that writes its amounts as doubles is not refused for it.
    """

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, float) and data.is_integer():
            data = int(data)
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A JSON string only: 5 and true are refused, not read as "5" and "True"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# The schema states what validation accepts, so that a schema-valid request is a valid one (the
# fuzz test in tests/payments/api/test_fuzz.py holds the API to its schema).
@extend_schema_field({"type": "string", "enum": sorted(MINOR_UNIT_DIGITS), "examples": ["USD"]})
class CurrencyField(StrictCharField):
    pass


# tok_visa: the test card the fake provider (and a provider's test mode) charges.
@extend_schema_field(
    {"type": "string", "pattern": SOURCE_PATTERN.pattern, "maxLength": 255, "examples": ["tok_visa"]}
)
class SourceField(StrictCharField):
    pass


# DRF refuses NUL characters in any string; "" is allowed.
DESCRIPTION_SCHEMA = {"type": "string", "pattern": "^[^\\x00]*$", "maxLength": 500}


@extend_schema_field(DESCRIPTION_SCHEMA)
class DescriptionField(StrictCharField):
    pass


# Every limit validate_metadata enforces, as JSON Schema (OpenAPI 3.1) says it.
METADATA_SCHEMA = {
    "type": "object",
    "maxProperties": METADATA_MAX_KEYS,
    "propertyNames": {"maxLength": METADATA_MAX_KEY_CHARS},
    "additionalProperties": {
        "type": ["string", "number", "boolean", "null"],
        "maxLength": METADATA_MAX_VALUE_CHARS,
        "minimum": -METADATA_MAX_NUMBER,
        "maximum": METADATA_MAX_NUMBER,
    },
}


@extend_schema_field(METADATA_SCHEMA)
class MetadataField(serializers.JSONField):
    pass


class StrictBodySerializer(serializers.Serializer):
    """A request body: text no column can store and unknown fields are refused, each named."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if isinstance(data, dict):
            refused: dict[str, list[str]] = {}
            for field, value in data.items():
                for path in _unstorable({field: value}, ""):
                    refused.setdefault(_printable(field), []).append(UNSTORABLE_TEXT.format(path=path))
            if refused:
                raise serializers.ValidationError(refused)
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class ChargeCreateSerializer(StrictBodySerializer):
    amount = StrictIntegerField(
        min_value=1,
        max_value=settings.PAYMENT_MAX_AMOUNT,
        help_text="In the currency's minor unit: 1999 = 19.99 USD.",
    )
    # Exactly one of the schema's codes: " usd" is not one of them.
    currency = CurrencyField(trim_whitespace=False, help_text="ISO 4217 code, for example USD.")
    # Not trimmed: "tok_visa\n" is not a token, for the schema's pattern either.
    source = SourceField(
        max_length=255, trim_whitespace=False, help_text="A card token, for example tok_visa."
    )
    description = DescriptionField(max_length=500, required=False, allow_blank=True, default="")
    metadata = MetadataField(
        required=False,
        default=dict,
        help_text=(
            f"At most {METADATA_MAX_KEYS} keys of at most {METADATA_MAX_KEY_CHARS} characters; values are "
            f"strings of at most {METADATA_MAX_VALUE_CHARS} characters, numbers, booleans or null. Keys "
            "and text must be valid Unicode (no lone surrogates such as \\udfff)."
        ),
    )

    def validate_currency(self, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise serializers.ValidationError(
                "Must be a three-letter ISO 4217 code in capitals, such as USD."
            )
        if value not in MINOR_UNIT_DIGITS:
            raise serializers.ValidationError(f"Currency {value} is not supported.")
        return value

    def validate_source(self, value: str) -> str:
        note_card_source(value)  # masked in this request's log lines, whatever its shape
        if not SOURCE_PATTERN.fullmatch(value):
            raise serializers.ValidationError("Must be a card token such as tok_visa.")
        return value

    def validate_metadata(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        if len(value) > METADATA_MAX_KEYS:
            raise serializers.ValidationError(f"At most {METADATA_MAX_KEYS} keys.")
        for key, item in value.items():
            if len(key) > METADATA_MAX_KEY_CHARS:
                raise serializers.ValidationError(f"Keys are at most {METADATA_MAX_KEY_CHARS} characters.")
            if not isinstance(item, str | int | float | bool) and item is not None:
                raise serializers.ValidationError("Values must be strings, numbers, booleans or null.")
            if isinstance(item, str) and len(item) > METADATA_MAX_VALUE_CHARS:
                raise serializers.ValidationError(
                    f"String values are at most {METADATA_MAX_VALUE_CHARS} characters."
                )
            if (
                isinstance(item, int | float)
                and not isinstance(item, bool)
                and abs(item) > METADATA_MAX_NUMBER
            ):
                raise serializers.ValidationError("Numbers are at most 1.7976931348623157e308 in size.")
        return value


class ChargeCreateSchema(OpenApiSerializerExtension):
    """The request schema refuses unknown fields, as `to_internal_value` does.

    drf-spectacular writes a blank-allowed field with a pattern as `oneOf: [the field, ""]`;
    `description`'s pattern already admits "", which would then match both (invalid for oneOf),
    so it is stated once.
    """

    target_class = ChargeCreateSerializer

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        properties = {**schema["properties"], "description": {**DESCRIPTION_SCHEMA, "default": ""}}
        return {**schema, "properties": properties, "additionalProperties": False}


class ErrorSerializer(serializers.Serializer):
    """A transaction's `error`: the type, code and message the API answers for it (the error
    body's `error`, without what belongs to one response: retryable and request_id)."""

    type = serializers.CharField()
    code = serializers.CharField()
    message = serializers.CharField()
    decline_code = serializers.CharField(
        required=False, help_text="card_error only: why the card was declined."
    )
    provider_code = serializers.CharField(
        required=False, help_text="provider_rejected only: the provider's reason, when it gave one."
    )


class NextStepSerializer(serializers.Serializer):
    action = serializers.ChoiceField(
        choices=sorted(NEXT_ACTIONS),
        help_text=" ".join(f"`{name}`: {text}" for name, text in NEXT_ACTIONS.items()),
    )
    at = serializers.DateTimeField(allow_null=True)


class FieldsBuiltOnce(serializers.ModelSerializer):
    """A ModelSerializer that renders through one instance of its class, built once.

    DRF builds a ModelSerializer's fields for every instance: it reads the model's fields and
    makes a serializer field for each (`build_field`), then binds it; that was two thirds of
    the CPU of rendering a charge (bench/overhead.py). The fields depend only on the class
    (its Meta and declared fields), so every instance renders through the class's first one,
    whose fields (nested serializers' included) are built and bound once and only read
    afterwards: the same fields, the same code, the same output.

    Only without a context (every caller here passes none, so the fields see the same empty
    one); with one, DRF's own way. The `get_` methods run on that first instance, so they may
    read only their argument, never the serializer's own state. Two threads that build it at
    once build the same thing; either is kept.
    """

    def to_representation(self, instance: Any) -> dict[str, Any]:
        if self.context:
            return super().to_representation(instance)
        renderer = type(self).__dict__.get("_renderer")
        if renderer is None:
            renderer = type(self)()
            renderer.fields  # noqa: B018  (built before any other thread can see it)
            type(self)._renderer = renderer
        return serializers.Serializer.to_representation(renderer, instance)


class TransactionSerializer(FieldsBuiltOnce):
    """A charge as the API shows it; the full card token never leaves the database."""

    object = serializers.SerializerMethodField()
    source = serializers.CharField(source="source_masked")
    metadata = MetadataField(read_only=True, help_text="As sent when the charge was created.")
    error = serializers.SerializerMethodField()
    needs_review = serializers.BooleanField()
    next_step = serializers.SerializerMethodField()
    amount_refunded = serializers.SerializerMethodField()

    class Meta:
        model = Transaction
        fields = [
            "id",
            "object",
            "amount",
            "currency",
            "status",
            "source",
            "description",
            "metadata",
            "error",
            "provider_charge_id",
            "amount_refunded",
            "idempotency_key",
            "attempts",
            "next_retry_at",
            "needs_review",
            "next_step",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_object(self, txn: Transaction) -> str:
        return "charge"

    @extend_schema_field(NextStepSerializer())
    def get_next_step(self, txn: Transaction) -> dict[str, Any]:
        return next_step(txn)

    @extend_schema_field(
        serializers.IntegerField(help_text="What the provider has refunded (succeeded refunds).")
    )
    def get_amount_refunded(self, txn: Transaction) -> int:
        # Only a succeeded charge can have refunds: any other answer (a 504 written while the
        # database is down, say) is rendered without a query.
        if txn.status != Transaction.Status.SUCCEEDED:
            return 0
        return sum(refund.amount for refund in txn.refunds.all() if refund.status == Refund.Status.SUCCEEDED)

    @extend_schema_field(ErrorSerializer(allow_null=True))
    def get_error(self, txn: Transaction) -> dict[str, str] | None:
        """Null once succeeded and while a request is working on it; else its row of the answers
        table, as the charge answered it (payments.errors.error_for), so the two never differ."""
        error = None if txn.status == Transaction.Status.PENDING else error_for(txn)
        if error is None:
            return None
        return {"type": error.error_type, "code": error.code, "message": error.message, **error.extra}


class PaymentAttemptSerializer(FieldsBuiltOnce):
    class Meta:
        model = PaymentAttempt
        fields = ["number", "kind", "started_at", "duration_ms", "http_status", "outcome", "message"]
        read_only_fields = fields


class TransactionDetailSerializer(TransactionSerializer):
    attempt_log = PaymentAttemptSerializer(many=True, read_only=True)

    class Meta(TransactionSerializer.Meta):
        fields = [*TransactionSerializer.Meta.fields, "attempt_log"]
        read_only_fields = fields
