"""The provider's events as received (POST /webhooks/provider), read-only: what each said and
what it did to its charge or refund."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from payments.models import ProviderEvent


@admin.register(ProviderEvent)
class ProviderEventAdmin(admin.ModelAdmin):
    list_display = ("received_at", "type", "effect", "transaction", "refund", "webhook_id")
    list_filter = ("effect", "type")
    search_fields = ("webhook_id", "transaction__id", "refund__id")
    readonly_fields = (
        "webhook_id",
        "type",
        "sent_at",
        "received_at",
        "effect",
        "detail",
        "transaction",
        "refund",
        "payload",
    )
    list_select_related = ("transaction", "refund")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ProviderEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ProviderEvent | None = None) -> bool:
        return False
