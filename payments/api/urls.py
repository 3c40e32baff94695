from __future__ import annotations

from django.urls import path

from payments.api import refund_views, views

urlpatterns = [
    path("charges", views.ChargeListCreateView.as_view(), name="charges"),
    path("charges/<str:transaction_id>", views.ChargeDetailView.as_view(), name="charge-detail"),
    path("charges/<str:transaction_id>/cancel", views.ChargeCancelView.as_view(), name="charge-cancel"),
    path(
        "charges/<str:transaction_id>/refunds",
        refund_views.RefundListCreateView.as_view(),
        name="charge-refunds",
    ),
]
