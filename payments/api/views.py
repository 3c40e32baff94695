"""The API's views: charges (create, list, read, cancel). Each calls one service and renders its answer."""

from __future__ import annotations

import re
import uuid

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from payments import selectors, services
from payments.api import schema
from payments.api.pagination import ChargePagination
from payments.api.refund_serializers import ChargeDetailSerializer
from payments.api.serializers import ChargeCreateSerializer, TransactionSerializer
from payments.models import Transaction
from payments.transitions import Actor

IDEMPOTENCY_KEY_MAX_CHARS = 255
_PRINTABLE_ASCII = re.compile(r"^[\x21-\x7e]+$")


def idempotency_key(request: Request) -> str | None:
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


def transaction_for(request: Request, transaction_id: str) -> Transaction:
    # The URL takes any string, so that a malformed id gets the API's JSON 404, not Django's HTML one.
    try:
        pk = uuid.UUID(transaction_id)
    except ValueError:
        raise NotFound("No such charge.") from None
    txn = selectors.charge_shown(client=request.user, transaction_id=pk)
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
                {"type": "integer", "minimum": 1},
                required=False,
                description=f"1 for the first page (the default), {ChargePagination.page_size} charges "
                "a page; a page below 1 or past the last, or anything but ASCII digits (empty included), "
                "answers 404 not_found.",
            ),
            *schema.headers(retry_after=[503]),
        ],
        responses={200: schema.TransactionPage, **schema.errors(400, 404)},
    )
    def get(self, request: Request) -> Response:
        status_filter = request.query_params.get("status")
        if status_filter is not None and status_filter not in Transaction.Status.values:
            raise ValidationError({"status": [STATUS_FILTER_ERROR]})
        queryset = selectors.transactions_for_client(client=request.user, status=status_filter)
        paginator = ChargePagination()
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
                examples=[schema.IDEMPOTENCY_KEY_EXAMPLE],
            ),
            *schema.headers(retry_after=[409, 503]),
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
        responses={201: TransactionSerializer, **schema.errors(400, 402, 409, 413, 415, 422, 502, 504)},
        examples=[schema.CHARGE_EXAMPLE],
    )
    def post(self, request: Request) -> Response:
        key = idempotency_key(request)
        serializer = ChargeCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        charged = services.charge_create(
            client=request.user,
            request=services.ChargeRequest(**serializer.validated_data),
            idempotency_key=key,
        )
        response = Response(TransactionSerializer(charged.transaction).data, status=status.HTTP_201_CREATED)
        if charged.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


class ChargeDetailView(APIView):
    @extend_schema(
        operation_id="charges_retrieve",
        parameters=[TRANSACTION_ID, *schema.headers(retry_after=[503])],
        responses={200: ChargeDetailSerializer, **schema.errors(404)},
    )
    def get(self, request: Request, transaction_id: str) -> Response:
        # An unknown outcome: ask the provider, at most once per charge per PAYMENT_LOOKUP_ON_READ_S.
        txn = services.charge_lookup_on_read(transaction_for(request, transaction_id))
        return Response(ChargeDetailSerializer(txn).data)


class ChargeCancelView(APIView):
    @extend_schema(
        operation_id="charges_cancel",
        request=None,
        parameters=[TRANSACTION_ID, *schema.headers(retry_after=[503])],
        responses={200: TransactionSerializer, **schema.errors(404, 409)},
        description=(
            "Stop a payment that was not charged (failed, possibly with a retry scheduled): it will "
            "never be sent again. Idempotent: canceling a canceled payment answers 200. Refused with "
            "409 not_cancelable while the outcome is unknown or a request is in flight, and once final."
        ),
    )
    def post(self, request: Request, transaction_id: str) -> Response:
        txn = transaction_for(request, transaction_id)
        canceled = services.charge_cancel(
            transaction_id=txn.pk,
            reason="canceled by the API client",
            actor=request.user.get_username(),
            by=Actor.CLIENT,
        )
        return Response(TransactionSerializer(canceled).data)
