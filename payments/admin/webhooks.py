"""Events out in the admin: clients' endpoints, the outbox, and deliveries with a replay action.

Read-only but for the replay (support never edits an endpoint: the client owns it); secrets are
never shown.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from payments import services
from payments.models import ClientEvent, DeliveryAttempt, EventDelivery, WebhookEndpoint


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnly):
    list_display = ["id", "client", "url", "enabled", "disabled_reason", "consecutive_failures", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["id", "url", "client__username"]
    exclude = ["secret", "previous_secret"]
    readonly_fields = ["last_sequence", "failing_since", "consecutive_failures", "previous_secret_until"]


@admin.register(ClientEvent)
class ClientEventAdmin(ReadOnly):
    list_display = ["id", "type", "client", "transaction", "refund", "created_at"]
    list_filter = ["type"]
    search_fields = ["id", "transaction__id", "refund__id"]


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = readonly_fields = ["number", "started_at", "duration_ms", "http_status", "error"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(EventDelivery)
class EventDeliveryAdmin(ReadOnly):
    list_display = [
        "id",
        "event",
        "endpoint",
        "sequence",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
    ]
    list_filter = ["status"]
    search_fields = ["id", "event__id", "endpoint__id", "endpoint__url"]
    inlines = [DeliveryAttemptInline]
    actions = ["replay"]

    @admin.action(
        description="Replay: send the event again (after the endpoint's others)", permissions=["replay"]
    )
    def replay(self, request: HttpRequest, queryset: QuerySet[EventDelivery]) -> None:
        replays = [services.delivery_replay(d, actor=request.user.get_username()) for d in queryset]
        self.message_user(request, f"{len(replays)} delivery(ies) queued again.", messages.SUCCESS)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("payments.replay_delivery")
