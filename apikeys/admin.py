"""API keys in the admin, for superusers only: list by prefix, issue (the key is shown once), revoke.

The library registers its own, unused APIKey model in the admin, and DRF's authtoken
app (still installed, see settings) its plaintext tokens, which no longer authenticate:
neither is offered.
"""

from __future__ import annotations

from typing import Any

import rest_framework.authtoken.admin  # noqa: F401  (registers TokenProxy, replaced below)
from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from rest_framework.authtoken.models import TokenProxy
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as UnusedLibraryAPIKey

from apikeys.models import APIKey, active_keys_named

for model in (UnusedLibraryAPIKey, TokenProxy):
    if admin.site.is_registered(model):
        admin.site.unregister(model)


class SuperuserOnly:
    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request)

    has_add_permission = has_change_permission = has_delete_permission = has_view_permission


class APIKeyForm(forms.ModelForm):
    """Refuses a second active key of one name for a client, as `manage.py issue_api_key` does."""

    class Meta:
        model = APIKey
        fields = ("user", "name", "expiry_date", "revoked")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        key = self.instance
        user = cleaned.get("user", key.user if key.user_id else None)
        name = cleaned.get("name", key.name)
        revoked = cleaned.get("revoked", key.revoked)
        expiry = cleaned.get("expiry_date", key.expiry_date)
        if user is None or not name or revoked or (expiry is not None and expiry < timezone.now()):
            return cleaned  # this key will not be active: no other active key conflicts with it
        others = active_keys_named(user, name, exclude_pk=key.pk)
        if others:
            self.add_error(
                "name",
                f"API client {user.get_username()!r} already has an active key named {name!r} "
                f"({others[0].prefix}…): revoke it first, or choose another name.",
            )
        return cleaned


@admin.register(APIKey)
class APIKeyAdmin(SuperuserOnly, APIKeyModelAdmin):
    form = APIKeyForm
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
