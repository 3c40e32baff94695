"""API keys in the admin, for superusers only: list by prefix, issue (the key is shown once), revoke.

The library registers its own, unused APIKey model in the admin, and DRF's authtoken
app (still installed, see settings) its plaintext tokens, which no longer authenticate:
neither is offered.
"""

from __future__ import annotations

from typing import Any

import rest_framework.authtoken.admin  # noqa: F401  (registers TokenProxy, replaced below)
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework.authtoken.models import TokenProxy
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as UnusedLibraryAPIKey

from apikeys.models import APIKey

for model in (UnusedLibraryAPIKey, TokenProxy):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


class SuperuserOnly:
    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    has_add_permission = has_change_permission = has_delete_permission = has_view_permission


@admin.register(APIKey)
class APIKeyAdmin(SuperuserOnly, APIKeyModelAdmin):
    list_display = (
        "prefix",
        "name",
        "user",
        "created",
        "last_used_at",
        "expiry_date",
        "_has_expired",
        "revoked",
    )
    list_filter = ("revoked", "created")
    list_select_related = ("user",)
    search_fields = ("prefix", "name", "user__username")
    raw_id_fields = ("user",)
    actions = ["revoke_selected"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = (*super().get_readonly_fields(request, obj), "last_used_at")
        return fields if obj is None else (*fields, "user")

    @admin.action(description="Revoke the selected API keys")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        count = queryset.filter(revoked=False).update(revoked=True)
        self.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)


@admin.register(TokenProxy)
class LegacyTokenAdmin(admin.ModelAdmin):
    """Plaintext tokens were moved into API keys by a migration; none may be created again."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    has_add_permission = has_change_permission = has_delete_permission = has_view_permission
