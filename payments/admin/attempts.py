"""A payment's attempts, as a table on its page: which reached the provider, and what each saw."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from payments.admin.banners import NO_WRAP, fixed_message, when
from payments.models import PaymentAttempt, Transaction


def attempt_kind(attempt: PaymentAttempt) -> str:
    """A charge's attempts and lookups, and a refund's (with its amount), told apart."""
    if attempt.kind == "lookup":
        return "lookup (asks; never charges)"
    if attempt.kind == "refund":
        return f"refund of {attempt.refund.amount_display} (sends money back)" if attempt.refund else "refund"
    if attempt.kind == "refund_lookup":
        amount = f" of {attempt.refund.amount_display}" if attempt.refund else ""
        return f"refund lookup{amount} (asks; never refunds)"
    return attempt.kind


class PaymentAttemptInline(admin.TabularInline):
    model = PaymentAttempt
    template = "admin/payments/transaction/attempts_inline.html"
    verbose_name_plural = "provider attempts"
    fields = ("number", "kind_shown", "started", "duration_ms", "http_status", "outcome", "reached", "shown")
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="kind")
    def kind_shown(self, attempt: PaymentAttempt) -> str:
        return attempt_kind(attempt)

    @admin.display(description="started")
    def started(self, attempt: PaymentAttempt) -> str:
        return format_html(NO_WRAP, when(attempt.started_at))

    @admin.display(description="reached the provider")
    def reached(self, attempt: PaymentAttempt) -> str:
        return "yes" if attempt.reached_provider else "no: connection refused, nothing sent"

    @admin.display(description="message")
    def shown(self, attempt: PaymentAttempt) -> str:
        return fixed_message(attempt.message, attempt.outcome, attempt.http_status)

    def get_queryset(self, request: HttpRequest) -> QuerySet[PaymentAttempt]:
        return super().get_queryset(request).select_related("refund")

    def has_add_permission(self, request: HttpRequest, obj: Transaction | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Transaction | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Transaction | None = None) -> bool:
        return False
