from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, reverse_lazy
from django.views.decorators.cache import cache_control
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from health.views import metrics
from payments import pages, webhooks

urlpatterns = [
    path("", TemplateView.as_view(template_name="index.html"), name="index"),
    # What every browser asks for on every page (an SVG, which browsers take at this path too).
    path(
        "favicon.ico",
        cache_control(max_age=86400, public=True)(
            TemplateView.as_view(template_name="favicon.svg", content_type="image/svg+xml")
        ),
        name="favicon",
    ),
    path("admin/", admin.site.urls),
    path("api/v1/", include("payments.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("health/", include("health.urls")),
    path("metrics", metrics, name="metrics"),
    path("pay/", pages.pay, name="pay"),
    # The provider's events (Standard Webhooks signatures, no API key): payments/webhooks.py.
    path("webhooks/provider", webhooks.provider_events, name="provider-events"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page=reverse_lazy("login")), name="logout"),
]
