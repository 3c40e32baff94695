from __future__ import annotations

from django.urls import path

from payments.api import refund_views, views, webhook_views

urlpatterns = [
    path("charges", views.ChargeListCreateView.as_view(), name="charges"),
    path("charges/<str:transaction_id>", views.ChargeDetailView.as_view(), name="charge-detail"),
    path("charges/<str:transaction_id>/cancel", views.ChargeCancelView.as_view(), name="charge-cancel"),
    path(
        "charges/<str:transaction_id>/refunds",
        refund_views.RefundListCreateView.as_view(),
        name="charge-refunds",
    ),
    path("webhook_endpoints", webhook_views.EndpointListCreateView.as_view(), name="webhook-endpoints"),
    path(
        "webhook_endpoints/<str:endpoint_id>",
        webhook_views.EndpointDetailView.as_view(),
        name="webhook-endpoint-detail",
    ),
    path(
        "webhook_endpoints/<str:endpoint_id>/rotate",
        webhook_views.EndpointRotateView.as_view(),
        name="webhook-endpoint-rotate",
    ),
    path(
        "webhook_endpoints/<str:endpoint_id>/deliveries",
        webhook_views.DeliveryListView.as_view(),
        name="webhook-deliveries",
    ),
    path(
        "webhook_endpoints/<str:endpoint_id>/deliveries/<str:delivery_id>/replay",
        webhook_views.DeliveryReplayView.as_view(),
        name="webhook-delivery-replay",
    ),
]
