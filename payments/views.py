from __future__ import annotations

import re
import uuid

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
                "retryable": serializers.BooleanField(),
                "request_id": serializers.CharField(allow_null=True),
                "decline_code": serializers.CharField(required=False),
                "provider_code": serializers.CharField(required=False),
                "fields": serializers.DictField(required=False),
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


class ChargeListCreateView(APIView):
    @extend_schema(
        operation_id="charges_list",
        parameters=[OpenApiParameter("status", enum=Transaction.Status.values, required=False)],
        responses={200: TransactionPage, 400: ErrorResponse, 401: ErrorResponse},
    )
    def get(self, request: Request) -> Response:
        status_filter = request.query_params.get("status")
        if status_filter and status_filter not in Transaction.Status.values:
            raise ValidationError({"status": [f"Must be one of {', '.join(Transaction.Status.values)}."]})
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
            )
        ],
        responses={
            201: TransactionSerializer,
            **{
                code: OpenApiResponse(ErrorResponse)
                for code in (400, 401, 402, 409, 413, 415, 422, 500, 502, 503, 504)
            },
        },
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
        parameters=[OpenApiParameter("transaction_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses={200: TransactionDetailSerializer, 401: ErrorResponse, 404: ErrorResponse},
    )
    def get(self, request: Request, transaction_id: str) -> Response:
        return Response(TransactionDetailSerializer(_transaction_for(request, transaction_id)).data)


class ChargeCancelView(APIView):
    @extend_schema(
        operation_id="charges_cancel",
        request=None,
        parameters=[OpenApiParameter("transaction_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses={200: TransactionSerializer, 401: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse},
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
