from __future__ import annotations

from django.urls import path

from health import views

urlpatterns = [
    path("", views.health, name="health"),
    path("live", views.live, name="health-live"),
    path("ready", views.ready, name="health-ready"),
]
