from __future__ import annotations

import re
import uuid

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from payments import outcomes, selectors, services
from payments.exceptions import DRF_ERROR_TYPES
from payments.models import Transaction
from payments.serializers import ChargeCreateSerializer, TransactionDetailSerializer, TransactionSerializer

IDEMPOTENCY_KEY_MAX_CHARS = 255
# Every error.type the API can answer: the outcome table's, and DRF's (exceptions.py).
ERROR_TYPES = {a.error_type for a in outcomes.ANSWERS if a.error_type} | set(DRF_ERROR_TYPES.values())
_PRINTABLE_ASCII = re.compile(r"^[\x21-\x7e]+$")

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
                    required=False, help_text="provider_rejected only: the provider's reason."
                ),
                "fields": serializers.DictField(
                    child=serializers.ListField(child=serializers.CharField()),
                    required=False,
                    help_text="invalid_fields only: the messages for each refused field or header.",
                ),
            },
        ),
        "transaction": TransactionSerializer(allow_null=True),
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


def _headers(*, retry_after: list[int]) -> list[OpenApiParameter]:
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
    "idempotency_key_reused; charge_canceled; invalid_request / not_cancelable.",
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


def _errors(*statuses: int) -> dict[int, OpenApiResponse]:
    return {
        code: OpenApiResponse(ErrorResponse, description=ERROR_STATUSES[code])
        for code in sorted({*statuses, *COMMON_ERRORS})
    }


def _idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header: absent is None; present, it must be 1 to 255 visible ASCII
    characters (no spaces). An empty key is refused, never taken as "no key": the same
    request sent twice would then charge twice."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not (1 <= len(key) <= IDEMPOTENCY_KEY_MAX_CHARS) or not _PRINTABLE_ASCII.match(key):
        raise ValidationError(
            {
                "Idempotency-Key": [
                    f"Must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} visible ASCII characters (no spaces)."
                ]
            }
        )
    return key


def _transaction_for(request: Request, transaction_id: str) -> Transaction:
    # The URL takes any string, so that a malformed id gets the API's JSON 404, not Django's HTML one.
    try:
        pk = uuid.UUID(transaction_id)
    except ValueError:
        raise NotFound("No such charge.") from None
    txn = (
        selectors.transactions_for_client(client=request.user)
        .prefetch_related("attempt_log")
        .filter(pk=pk)
        .first()
    )
    if txn is None:
        raise NotFound("No such charge.")
    return txn


STATUS_FILTER_ERROR = f"Must be one of {', '.join(Transaction.Status.values)}."
TRANSACTION_ID = OpenApiParameter("transaction_id", OpenApiTypes.UUID, OpenApiParameter.PATH)


class ChargeListCreateView(APIView):
    @extend_schema(
        operation_id="charges_list",
        parameters=[
            OpenApiParameter(
                "status",
                enum=Transaction.Status.values,
                required=False,
                description="Any other value, empty included, answers 400 invalid_request.",
            ),
            OpenApiParameter(
                "page",
                int,
                required=False,
                description=f"1 for the first page (the default), {PageNumberPagination.page_size} charges "
                "a page; a page below 1 or past the last, or not a number, answers 404 not_found.",
            ),
            *_headers(retry_after=[503]),
        ],
        responses={200: TransactionPage, **_errors(400, 404)},
    )
    def get(self, request: Request) -> Response:
        status_filter = request.query_params.get("status")
        if status_filter is not None and status_filter not in Transaction.Status.values:
            raise ValidationError({"status": [STATUS_FILTER_ERROR]})
        queryset = selectors.transactions_for_client(client=request.user, status=status_filter)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(TransactionSerializer(page, many=True).data)

    @extend_schema(
        operation_id="charges_create",
        request=ChargeCreateSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                location=OpenApiParameter.HEADER,
                required=False,
                pattern=f"^[\\x21-\\x7e]{{1,{IDEMPOTENCY_KEY_MAX_CHARS}}}$",
            ),
            *_headers(retry_after=[409, 503]),
            OpenApiParameter(
                "Idempotent-Replayed",
                str,
                OpenApiParameter.HEADER,
                enum=["true"],
                response=[201, 402, 409, 422, 502, 504],
                description="Present when the answer is the stored outcome of an earlier request with the "
                "same Idempotency-Key: nothing was sent to the provider this time.",
            ),
        ],
        responses={201: TransactionSerializer, **_errors(400, 402, 409, 413, 415, 422, 502, 504)},
    )
    def post(self, request: Request) -> Response:
        idempotency_key = _idempotency_key(request)
        serializer = ChargeCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        charged = services.charge_create(
            client=request.user,
            request=services.ChargeRequest(**serializer.validated_data),
            idempotency_key=idempotency_key,
        )
        response = Response(TransactionSerializer(charged.transaction).data, status=status.HTTP_201_CREATED)
        if charged.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


class ChargeDetailView(APIView):
    @extend_schema(
        operation_id="charges_retrieve",
        parameters=[TRANSACTION_ID, *_headers(retry_after=[503])],
        responses={200: TransactionDetailSerializer, **_errors(404)},
    )
    def get(self, request: Request, transaction_id: str) -> Response:
        return Response(TransactionDetailSerializer(_transaction_for(request, transaction_id)).data)


class ChargeCancelView(APIView):
    @extend_schema(
        operation_id="charges_cancel",
        request=None,
        parameters=[TRANSACTION_ID, *_headers(retry_after=[503])],
        responses={200: TransactionSerializer, **_errors(404, 409)},
        description=(
            "Stop a payment that was not charged (failed, possibly with a retry scheduled): it will "
            "never be sent again. Idempotent: canceling a canceled payment answers 200. Refused with "
            "409 not_cancelable while the outcome is unknown or a request is in flight, and once final."
        ),
    )
    def post(self, request: Request, transaction_id: str) -> Response:
        txn = _transaction_for(request, transaction_id)
        canceled = services.charge_cancel(
            transaction_id=txn.pk, reason="canceled by the API client", actor=request.user.get_username()
        )
        return Response(TransactionSerializer(canceled).data)
