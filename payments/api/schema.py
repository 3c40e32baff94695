"""The OpenAPI declarations the API's views share: the error body, the page of charges, the
response headers, what each error status means, the examples and the links between the
operations. drf-spectacular reads them."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

from payments import outcomes
from payments.api.exceptions import DRF_ERROR_TYPES
from payments.api.refund_serializers import RefundSerializer
from payments.api.serializers import TransactionSerializer

# Every error.type the API can answer: the outcome table's, and DRF's (exceptions.py).
ERROR_TYPES = {a.error_type for a in outcomes.BY_NAME.values() if a.error_type} | set(
    DRF_ERROR_TYPES.values()
)

ErrorResponse = inline_serializer(
    "ErrorResponse",
    fields={
        "error": inline_serializer(
            "ErrorDetail",
            fields={
                "type": serializers.ChoiceField(choices=sorted(ERROR_TYPES)),
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "retryable": serializers.BooleanField(
                    help_text="May the same request (same Idempotency-Key) be sent again?"
                ),
                "request_id": serializers.CharField(help_text="The response's X-Request-ID."),
                "decline_code": serializers.CharField(
                    required=False, help_text="card_error only: why the card was declined."
                ),
                "provider_code": serializers.CharField(
                    required=False,
                    help_text="provider_rejected only: the provider's reason, when it gave one.",
                ),
                "refundable": serializers.IntegerField(
                    required=False, help_text="amount_exceeds_refundable only: what is left to refund."
                ),
                "fields": serializers.DictField(
                    child=serializers.ListField(child=serializers.CharField()),
                    required=False,
                    help_text="invalid_fields only: the messages for each refused field or header.",
                ),
            },
        ),
        "transaction": TransactionSerializer(
            allow_null=True,
            help_text="The payment the answer is about (its `error` is this answer's type, code and "
            "message), or null when there is none.",
        ),
        "refund": RefundSerializer(
            required=False,
            allow_null=True,
            help_text="On a refund's answers only: the refund the answer is about.",
        ),
    },
)


TransactionPage = inline_serializer(
    "TransactionPage",
    fields={
        "count": serializers.IntegerField(),
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": TransactionSerializer(many=True),
    },
)

# Response headers. X-Request-ID is on every answer (core.logs.request_id.RequestIdMiddleware).
REQUEST_ID = OpenApiParameter(
    "X-Request-ID",
    str,
    OpenApiParameter.HEADER,
    required=True,
    response=True,
    description="This request's id, also in error.request_id and in the service's logs: the caller's "
    "X-Request-ID when it is 1 to 128 of A-Z a-z 0-9 . _ -, else a new one.",
)
AUTHENTICATE = OpenApiParameter(
    "WWW-Authenticate",
    str,
    OpenApiParameter.HEADER,
    required=True,
    response=[401],
    description="The scheme to use: Token.",
)
# Errors every operation may answer; 503 when the database is down or out of connections.
COMMON_ERRORS = (401, 403, 500, 503)


def headers(*, retry_after: list[int]) -> list[OpenApiParameter]:
    """The response headers every operation has, and Retry-After on the statuses that send it."""
    return [
        REQUEST_ID,
        AUTHENTICATE,
        OpenApiParameter(
            "Retry-After",
            int,
            OpenApiParameter.HEADER,
            response=retry_after,
            description="Seconds to wait before sending the same request again.",
        ),
    ]


# What each error status means (error.type / error.code); payments.outcomes has the whole table.
ERROR_STATUSES = {
    400: "invalid_request: a field, header or parameter was refused (error.fields says which).",
    401: "authentication_error: no API key, or one that is wrong, revoked or expired.",
    402: "card_error / card_declined: nothing was charged (error.decline_code says why).",
    403: "permission_error: this account may not take payments.",
    404: "not_found: no such charge for this client, or no such page.",
    409: "idempotency_error / request_in_progress (send again after Retry-After) or "
    "idempotency_key_reused (transaction is null: this request was not sent and nothing of it was "
    "kept); charge_canceled; invalid_request / not_cancelable.",
    413: f"payload_too_large: the body is over {settings.API_MAX_BODY_BYTES // 1024} KiB.",
    415: "unsupported_media_type: the body is not application/json.",
    422: "provider_rejected: the provider refused the payment's details; nothing was charged "
    "(error.provider_code).",
    500: "internal_error: an unexpected failure in the service.",
    502: "provider_error: the provider did not charge; retryable when a retry is scheduled.",
    503: "provider_unavailable, or database_busy (the database is down or out of connections): "
    "nothing was written; send again after Retry-After.",
    504: "outcome_unknown: the provider may have charged; the same request (same Idempotency-Key) "
    "is safe to send again and never charges twice.",
}


# What each error status means on a refund's operations, where it differs from a charge's.
REFUND_ERROR_STATUSES = {
    402: "refund_failed: the provider refused the refund; nothing was refunded (error.provider_code).",
    404: "not_found: no such charge for this client.",
    409: "invalid_request / charge_not_refundable (the charge is not known to have succeeded); "
    "idempotency_error / request_in_progress or idempotency_key_reused; refund_canceled.",
    422: "invalid_request / amount_exceeds_refundable: more than is left (error.refundable); "
    "nothing was written.",
    502: "provider_error: not refunded (no connection, or a lookup proved no refund); the same request "
    "may be sent again.",
    503: "provider_unavailable, or database_busy: nothing was written; send again after Retry-After.",
    504: "outcome_unknown: the provider may have refunded; the same request (same Idempotency-Key) is "
    "safe to send again and never refunds twice.",
}


def errors(*statuses: int, refund: bool = False) -> dict[int, OpenApiResponse]:
    meanings = {**ERROR_STATUSES, **REFUND_ERROR_STATUSES} if refund else ERROR_STATUSES
    return {
        code: OpenApiResponse(ErrorResponse, description=meanings[code])
        for code in sorted({*statuses, *COMMON_ERRORS})
    }


# A charge the fake provider (and a provider's test mode) charges: where generated clients and
# schemathesis start.
CHARGE_EXAMPLE = OpenApiExample(
    "A charge that succeeds",
    summary="19.99 USD with the test card tok_visa",
    value={
        "amount": 1999,
        "currency": "USD",
        "source": "tok_visa",
        "description": "Order A-1",
        "metadata": {"order_id": "A-1", "lines": 2, "gift": False},
    },
    request_only=True,
)
IDEMPOTENCY_KEY_EXAMPLE = OpenApiExample("One key per order", value="order-A-1")

# Where an answer names a charge: the charge itself (201), or the error body's transaction.
_CHARGE_ID = {"201": "$response.body#/id"} | {
    status: "$response.body#/transaction/id" for status in ("402", "422", "502", "504")
}
_LINKS = {
    "charges_retrieve": "Read the charge this answer is about.",
    "charges_cancel": "Cancel the charge this answer is about (a failed one can be).",
    "refunds_create": "Refund the charge this answer is about (a succeeded one can be).",
    "refunds_list": "List the refunds of the charge this answer is about.",
}


def add_links(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A POSTPROCESSING_HOOKS hook: OpenAPI links from each answer that names a charge to the
    operations that take its id, and from a page to its first charge (drf-spectacular declares
    no links; schemathesis's stateful phase follows them)."""
    operations = {op["operationId"]: op for item in result["paths"].values() for op in item.values()}
    responses = operations["charges_create"]["responses"]
    for status, expression in _CHARGE_ID.items():
        responses[status]["links"] = {
            f"{target}": {
                "operationId": target,
                "parameters": {"transaction_id": expression},
                "description": description,
            }
            for target, description in _LINKS.items()
        }
    operations["charges_list"]["responses"]["200"]["links"] = {
        "charges_retrieve": {
            "operationId": "charges_retrieve",
            "parameters": {"transaction_id": "$response.body#/results/0/id"},
            "description": "Read the newest charge of the page.",
        }
    }
    return result
