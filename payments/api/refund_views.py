"""The API's refund views: refund a charge, list its refunds. Each calls one service."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from payments import services
from payments.api import schema
from payments.api.refund_serializers import RefundCreateSerializer, RefundSerializer
from payments.api.views import IDEMPOTENCY_KEY_MAX_CHARS, TRANSACTION_ID, idempotency_key, transaction_for
from payments.transitions import Actor

REFUND_EXAMPLE = OpenApiExample(
    "A partial refund",
    summary="5.00 of the charge, asked for by the customer",
    value={"amount": 500, "reason": "requested_by_customer", "note": "one item returned"},
    request_only=True,
)


class RefundListCreateView(APIView):
    @extend_schema(
        operation_id="refunds_list",
        parameters=[TRANSACTION_ID, *schema.headers(retry_after=[503])],
        responses={200: RefundSerializer(many=True), **schema.errors(404, refund=True)},
        description="Every refund of the charge, newest first.",
    )
    def get(self, request: Request, transaction_id: str) -> Response:
        charge = transaction_for(request, transaction_id)
        refunds = charge.refunds.select_related("transaction").order_by("-created_at", "-pk")
        return Response(RefundSerializer(refunds, many=True).data)

    @extend_schema(
        operation_id="refunds_create",
        request=RefundCreateSerializer,
        parameters=[
            TRANSACTION_ID,
            OpenApiParameter(
                "Idempotency-Key",
                location=OpenApiParameter.HEADER,
                required=False,
                pattern=f"^[\\x21-\\x7e]{{1,{IDEMPOTENCY_KEY_MAX_CHARS}}}$",
                description="The same rules as a charge's, in a namespace of their own: the same key "
                "and body answer the first refund and never refund twice.",
            ),
            *schema.headers(retry_after=[409, 503]),
            OpenApiParameter(
                "Idempotent-Replayed",
                str,
                OpenApiParameter.HEADER,
                enum=["true"],
                response=[201, 202, 402, 409, 502, 504],
                description="Present when the answer is the stored outcome of an earlier request with the "
                "same Idempotency-Key: nothing was sent to the provider this time.",
            ),
        ],
        responses={
            201: RefundSerializer,
            202: RefundSerializer,
            **schema.errors(400, 402, 404, 409, 413, 415, 422, 502, 504, refund=True),
        },
        examples=[REFUND_EXAMPLE],
        description=(
            "Refund a succeeded charge, all that is left or `amount` of it, exactly once. 201: refunded; "
            "202: the provider accepted it and settles it later (`next_step`). Succeeded, pending and "
            "unknown refunds count against what is left, so a refund in flight holds its amount."
        ),
    )
    def post(self, request: Request, transaction_id: str) -> Response:
        key = idempotency_key(request)
        charge = transaction_for(request, transaction_id)
        serializer = RefundCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        refunded = services.refund_create(
            charge_id=charge.pk,
            client=request.user,
            request=services.RefundRequest(**serializer.validated_data),
            idempotency_key=key,
            by=Actor.CLIENT,
            requested_by=f"API client {request.user.get_username()}",
        )
        code = status.HTTP_201_CREATED if refunded.refund.status == "succeeded" else status.HTTP_202_ACCEPTED
        response = Response(RefundSerializer(refunded.refund).data, status=code)
        if refunded.replayed:
            response["Idempotent-Replayed"] = "true"
        return response
