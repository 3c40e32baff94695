"""The support staff's view of payments: failed ones first, fixed only through the services."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterable

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import SEARCH_VAR, ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.timezone import localtime

from payments import selectors, services
from payments.exceptions import PaymentError
from payments.forms import CancelForm
from payments.models import PaymentAttempt, Transaction
from payments.services import ActionOutcome, ActionResult

# Each retry or lookup is a provider call made while the support user waits.
ACTION_MAX_ROWS = 50
# Pending rows younger than this may still be waiting on their own provider call.
NO_WRAP = '<span style="white-space: nowrap">{}</span>'


class StatusFilter(admin.SimpleListFilter):
    """Status, defaulting to failed: the list opens on what support has to look at."""

    title = "status"
    parameter_name = "status"
    ALL = "all"

    def __init__(
        self, request: HttpRequest, params: dict, model: type, model_admin: admin.ModelAdmin
    ) -> None:
        super().__init__(request, params, model, model_admin)
        # A search looks through every status (a customer's transaction id, say).
        self.default = self.ALL if request.GET.get(SEARCH_VAR) else Transaction.Status.FAILED

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(self.ALL, "All"), *Transaction.Status.choices]

    def choices(self, changelist: ChangeList) -> Iterable[dict]:
        current = self.value() or self.default
        for value, label in self.lookup_choices:
            yield {
                "selected": current == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Transaction]) -> QuerySet[Transaction]:
        value = self.value() or self.default
        return queryset if value == self.ALL else queryset.filter(status=value)


class NeedsReviewFilter(admin.SimpleListFilter):
    title = "needs review"
    parameter_name = "needs_review"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Yes: a person must decide"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Transaction]) -> QuerySet[Transaction]:
        if self.value() == "yes":
            return queryset.filter(selectors.needs_review_q())
        if self.value() == "no":
            return queryset.exclude(selectors.needs_review_q())
        return queryset


class PaymentAttemptInline(admin.TabularInline):
    model = PaymentAttempt
    fields = ("number", "kind", "started_at", "duration_ms", "http_status", "outcome", "message")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Transaction | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Transaction | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Transaction | None = None) -> bool:
        return False


@admin.register(Transaction)
class TransactionAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "client",
        "amount_formatted",
        "status",
        "error",
        "attempts",
        "next_retry",
    )
    list_display_links = ("created_at",)
    list_filter = (StatusFilter, "error_type", NeedsReviewFilter, "currency", "created_at")
    list_select_related = ("client",)
    search_fields = (
        "provider_charge_id",
        "=idempotency_key",
        "=provider_idempotency_key",
        "description",
    )
    search_help_text = "Transaction id, provider charge id, idempotency key or description."
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    actions = ("retry_selected", "reconcile_selected", "cancel_selected")
    inlines = (PaymentAttemptInline,)
    fieldsets = (
        (None, {"fields": ("id", "client", "amount_formatted", "currency", "source_masked", "description")}),
        (
            "Outcome",
            {
                "fields": (
                    "status",
                    "error_type",
                    "error_code",
                    "error_message",
                    "attempts",
                    "next_retry",
                    "status_note",
                )
            },
        ),
        (
            "Keys",
            {"fields": ("idempotency_key", "provider_idempotency_key", "provider_charge_id", "metadata")},
        ),
        ("Dates", {"fields": ("created_at", "updated_at")}),
    )
    # Nothing is edited by hand: money and identity never change, and status only
    # through the actions below, which go through the same services as the API.
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    @admin.display(description="amount", ordering="amount")
    def amount_formatted(self, obj: Transaction) -> str:
        return format_html(NO_WRAP, obj.amount_display)

    @admin.display(description="error", ordering="error_type")
    def error(self, obj: Transaction) -> str:
        if not obj.error_type:
            return "—"
        return f"{obj.error_type} ({obj.error_code})" if obj.error_code != obj.error_type else obj.error_type

    @admin.display(description="next retry", ordering="next_retry_at")
    def next_retry(self, obj: Transaction) -> str:
        if obj.needs_review:
            return "needs review"
        return localtime(obj.next_retry_at).strftime("%Y-%m-%d %H:%M") if obj.next_retry_at else "—"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Transaction], search_term: str
    ) -> tuple[QuerySet[Transaction], bool]:
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        try:
            transaction_id = uuid.UUID(search_term.strip())
        except ValueError:
            return results, may_have_duplicates
        return results | queryset.filter(pk=transaction_id), may_have_duplicates

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Transaction | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Transaction | None = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("payments.retry_transaction")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("payments.cancel_transaction")

    @admin.action(description="Retry selected", permissions=["retry"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Transaction]) -> None:
        actor = request.user.get_username()
        self._run_action(
            request,
            queryset,
            verb="Retry",
            action=lambda txn: services.charge_retry(transaction_id=txn.pk, actor=actor),
        )

    @admin.action(description="Reconcile with provider", permissions=["retry"])
    def reconcile_selected(self, request: HttpRequest, queryset: QuerySet[Transaction]) -> None:
        actor = request.user.get_username()
        self._run_action(
            request,
            queryset,
            verb="Reconcile",
            action=lambda txn: services.charge_reconcile(transaction_id=txn.pk, actor=actor),
        )

    def _run_action(
        self,
        request: HttpRequest,
        queryset: QuerySet[Transaction],
        *,
        verb: str,
        action: Callable[[Transaction], ActionResult],
    ) -> None:
        selected = list(queryset[: ACTION_MAX_ROWS + 1])
        if len(selected) > ACTION_MAX_ROWS:
            self.message_user(
                request,
                f"Select at most {ACTION_MAX_ROWS} payments; use the management commands for more.",
                messages.ERROR,
            )
            return
        counts: Counter[str] = Counter()
        for txn in selected:
            result = action(txn)
            counts[result.outcome] += 1
            if result.outcome != ActionOutcome.SKIPPED:
                self.log_change(request, txn, f"{verb}: {result.outcome}. {result.detail}".strip())
        worked = len(selected) - counts[ActionOutcome.SKIPPED]
        shown = [ActionOutcome.SUCCEEDED, ActionOutcome.FAILED, ActionOutcome.SKIPPED]
        shown += [outcome for outcome in ActionOutcome if counts[outcome] and outcome not in shown]
        summary = ", ".join(f"{counts[outcome]} {outcome.value.replace('_', ' ')}" for outcome in shown)
        level = messages.SUCCESS if worked and worked == counts[ActionOutcome.SUCCEEDED] else messages.WARNING
        self.message_user(request, f"{verb} selected: {summary}.", level)

    @admin.action(description="Cancel…", permissions=["cancel"])
    def cancel_selected(
        self, request: HttpRequest, queryset: QuerySet[Transaction]
    ) -> TemplateResponse | None:
        form = CancelForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            actor = request.user.get_username()
            canceled = skipped = 0
            for txn in queryset:
                try:
                    services.charge_cancel(
                        transaction_id=txn.pk, reason=form.cleaned_data["reason"], actor=actor
                    )
                except PaymentError:
                    skipped += 1
                    continue
                canceled += 1
                self.log_change(request, txn, f"Canceled: {form.cleaned_data['reason']}")
            level = messages.SUCCESS if canceled and not skipped else messages.WARNING
            self.message_user(request, f"Canceled {canceled} payment(s); {skipped} skipped.", level)
            return None
        rows = [
            {"transaction": txn, "reason": selectors.cancel_refusal(txn)}
            for txn in queryset.select_related("client")
        ]
        for row in rows:
            row["cancelable"] = not row["reason"]
        context = {
            **self.admin_site.each_context(request),
            "title": "Cancel payments",
            "opts": self.opts,
            "rows": rows,
            "cancelable_count": sum(row["cancelable"] for row in rows),
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/payments/transaction/cancel_selected.html", context)
