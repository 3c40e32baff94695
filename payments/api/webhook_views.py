"""The API's webhook endpoints: register, list, read, change, remove, rotate; deliveries, replay.

Each calls one service. A client sees and changes only its own endpoints and their deliveries.
The deliveries list pages with a cursor, not a page number as the charges list does: an
endpoint's newest deliveries come first and new ones keep arriving at the head, so a numbered
page would shift under a client reading on (a delivery seen twice, or one missed).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from payments import services
from payments.api import schema
from payments.api.webhook_serializers import (
    EndpointCreateSerializer,
    EndpointUpdateSerializer,
    EventDeliveryPage,
    EventDeliverySerializer,
    WebhookEndpointSecretSerializer,
    WebhookEndpointSerializer,
)
from payments.models import EventDelivery, WebhookEndpoint

ENDPOINT_ID = OpenApiParameter("endpoint_id", OpenApiTypes.STR, OpenApiParameter.PATH)
DELIVERY_ID = OpenApiParameter("delivery_id", OpenApiTypes.STR, OpenApiParameter.PATH)
HEADERS = schema.headers(retry_after=[503])


class DeliveryPagination(CursorPagination):
    """Newest first by `sequence` (unique per endpoint), as many a page as the charges list. A cursor
    that is not one of ours is the documented 404, as a page that is not a number is the charges
    list's: DRF's own check reads an empty one as the first page and lets a position that is no
    number through, to a query that would fail (a 500)."""

    ordering = "-sequence"  # page_size: REST_FRAMEWORK's PAGE_SIZE, as the charges list's

    def decode_cursor(self, request: Request) -> Cursor | None:
        if request.query_params.get(self.cursor_query_param) == "":  # DRF reads it as the first page
            raise NotFound(self.invalid_cursor_message)
        cursor = super().decode_cursor(request)
        position = cursor.position if cursor is not None else None
        if position is not None and not (position.isascii() and position.isdigit()):
            raise NotFound(self.invalid_cursor_message)
        return cursor


CURSOR = OpenApiParameter(
    DeliveryPagination.cursor_query_param,
    OpenApiTypes.STR,
    required=False,
    description="Absent for the newest deliveries; then the `next` (or `previous`) link's cursor, "
    f"{DeliveryPagination.page_size} deliveries a page. A cursor that is not one of those links' "
    "answers 404 not_found.",
)


def endpoint_for(request: Request, endpoint_id: str) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(client=request.user, pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound("No such webhook endpoint.")
    return endpoint


class EndpointListCreateView(APIView):
    @extend_schema(
        operation_id="webhook_endpoints_list",
        parameters=HEADERS,
        responses={200: WebhookEndpointSerializer(many=True), **schema.errors()},
        description="Every webhook endpoint of this client, newest first (secrets are never shown again).",
    )
    def get(self, request: Request) -> Response:
        endpoints = WebhookEndpoint.objects.filter(client=request.user).order_by("-created_at", "-pk")
        return Response(WebhookEndpointSerializer(endpoints, many=True).data)

    @extend_schema(
        operation_id="webhook_endpoints_create",
        request=EndpointCreateSerializer,
        parameters=HEADERS,
        responses={201: WebhookEndpointSecretSerializer, **schema.errors(400, 413, 415)},
        description=(
            "Register a URL to be sent the listed events, each a Standard Webhooks request signed with "
            "the `secret` of this answer (shown once). A URL that is not allowed answers 400 "
            "invalid_request / url_not_allowed."
        ),
    )
    def post(self, request: Request) -> Response:
        serializer = EndpointCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = services.endpoint_create(client=request.user, **serializer.validated_data)
        return Response(WebhookEndpointSecretSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class EndpointDetailView(APIView):
    @extend_schema(
        operation_id="webhook_endpoints_retrieve",
        parameters=[ENDPOINT_ID, *HEADERS],
        responses={200: WebhookEndpointSerializer, **schema.errors(404)},
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        return Response(WebhookEndpointSerializer(endpoint_for(request, endpoint_id)).data)

    @extend_schema(
        operation_id="webhook_endpoints_update",
        request=EndpointUpdateSerializer,
        parameters=[ENDPOINT_ID, *HEADERS],
        responses={200: WebhookEndpointSerializer, **schema.errors(400, 404, 413, 415)},
        description="Change the URL (checked again), the event types, or whether it is enabled.",
    )
    def patch(self, request: Request, endpoint_id: str) -> Response:
        endpoint = endpoint_for(request, endpoint_id)
        serializer = EndpointUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        updated = services.endpoint_update(endpoint, **serializer.validated_data)
        return Response(WebhookEndpointSerializer(updated).data)

    @extend_schema(
        operation_id="webhook_endpoints_destroy",
        parameters=[ENDPOINT_ID, *HEADERS],
        responses={204: None, **schema.errors(404)},
        description="Remove the endpoint and its deliveries; nothing more is sent to it.",
    )
    def delete(self, request: Request, endpoint_id: str) -> Response:
        services.endpoint_delete(endpoint_for(request, endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class EndpointRotateView(APIView):
    @extend_schema(
        operation_id="webhook_endpoints_rotate",
        request=None,
        parameters=[ENDPOINT_ID, *HEADERS],
        responses={200: WebhookEndpointSecretSerializer, **schema.errors(404)},
        description=(
            "A new secret, shown once. The old one keeps signing beside it (two signatures in "
            "webhook-signature) for EVENTS_SECRET_OVERLAP_S, one day by default."
        ),
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        endpoint = services.endpoint_rotate(endpoint_for(request, endpoint_id))
        return Response(WebhookEndpointSecretSerializer(endpoint).data)


class DeliveryListView(APIView):
    @extend_schema(
        operation_id="webhook_deliveries_list",
        parameters=[ENDPOINT_ID, CURSOR, *HEADERS],
        responses={200: EventDeliveryPage, **schema.errors(404)},
        description="The endpoint's deliveries, newest first, with their attempts; `next` is the "
        "link to the older ones (null on the last page).",
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        endpoint = endpoint_for(request, endpoint_id)
        deliveries = endpoint.deliveries.select_related("event").prefetch_related("attempt_log")
        paginator = DeliveryPagination()
        page = paginator.paginate_queryset(deliveries, request, view=self)
        return paginator.get_paginated_response(EventDeliverySerializer(page, many=True).data)


class DeliveryReplayView(APIView):
    @extend_schema(
        operation_id="webhook_deliveries_replay",
        request=None,
        parameters=[ENDPOINT_ID, DELIVERY_ID, *HEADERS],
        responses={201: EventDeliverySerializer, **schema.errors(404)},
        description="Send the delivery's event again: a new delivery, after the endpoint's others.",
    )
    def post(self, request: Request, endpoint_id: str, delivery_id: str) -> Response:
        endpoint = endpoint_for(request, endpoint_id)
        delivery = (
            EventDelivery.objects.filter(endpoint=endpoint, pk=delivery_id).select_related("event").first()
        )
        if delivery is None:
            raise NotFound("No such delivery.")
        replay = services.delivery_replay(delivery, actor=request.user.get_username())
        return Response(EventDeliverySerializer(replay).data, status=status.HTTP_201_CREATED)
