"""The support staff's view of payments: what happened to each one, what waits for a person,
and the safe next step, taken only through the services the API and the commands use."""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from collections.abc import Callable

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.html import format_html

from payments import services, transitions
from payments.admin.attempts import PaymentAttemptInline
from payments.admin.banners import (
    NO_WRAP,
    RETRY_GRACE,
    allowed_actions,
    attempt_summary,
    fixed_message,
    minutes,
    state_banner,
    when,
)
from payments.admin.filters import AttentionFilter, NeedsReviewFilter, StatusFilter
from payments.admin.forms import CancelForm
from payments.admin.refunds import TransactionRefunds, refund_panel
from payments.errors import PaymentError
from payments.models import Transaction
from payments.services import ActionOutcome, ActionResult

# Each retry or lookup is a provider call made while the support user waits; every bulk action
# (retry, reconcile, cancel) takes at most this many rows at a time, checked in `bulk_action`.
ACTION_MAX_ROWS = 50
TOO_MANY_ROWS = f"Select at most {ACTION_MAX_ROWS} payments; use the management commands for more."
# The list must fit a 1366 px screen: the navigation sidebar would take 275 px of it, to
# list the one model support works with (Home and the breadcrumbs lead there too).
admin.site.enable_nav_sidebar = False


RESULT_TEXT = {
    ActionOutcome.SUCCEEDED: "succeeded, the provider charged the card",
    ActionOutcome.DECLINED: "declined by the provider, nothing was charged",
    ActionOutcome.FAILED: "failed again, not charged",
    ActionOutcome.UNKNOWN: "the outcome is still unknown",
    ActionOutcome.NOT_CHARGED: "the provider made no charge, retry is safe",
    ActionOutcome.UNAVAILABLE: "the provider could not be asked, nothing changed",
    ActionOutcome.SKIPPED: "not done",
    ActionOutcome.ERROR: "an unexpected error, the payment is flagged for review",
}
RESULT_LEVEL = {
    ActionOutcome.SUCCEEDED: messages.SUCCESS,
    ActionOutcome.DECLINED: messages.INFO,
    ActionOutcome.NOT_CHARGED: messages.INFO,
    ActionOutcome.ERROR: messages.ERROR,
}


BulkAction = Callable[["TransactionAdmin", HttpRequest, QuerySet[Transaction]], TemplateResponse | None]


def bulk_action(*, description: str, permissions: list[str]) -> Callable[[BulkAction], BulkAction]:
    """An admin action on the selected rows, refused with one message above ACTION_MAX_ROWS.

    The one check for every bulk action, at every step (Cancel…'s confirmation and its apply).
    """

    def decorate(action: BulkAction) -> BulkAction:
        @functools.wraps(action)
        def bounded(
            model_admin: TransactionAdmin, request: HttpRequest, queryset: QuerySet[Transaction]
        ) -> TemplateResponse | None:
            if queryset.count() > ACTION_MAX_ROWS:
                model_admin.message_user(request, TOO_MANY_ROWS, messages.ERROR)
                return None
            return action(model_admin, request, queryset)

        return admin.action(description=description, permissions=permissions)(bounded)

    return decorate


@admin.register(Transaction)
class TransactionAdmin(TransactionRefunds):
    list_display = ("created", "client", "amount_formatted", "status", "error", "attempts", "next_retry")
    list_display_links = ("created",)
    list_filter = (
        StatusFilter,
        AttentionFilter,
        "error_type",
        NeedsReviewFilter,
        ("currency", admin.AllValuesFieldListFilter),  # only the currencies in use
        # Day boundaries computed in Python: unlike date_hierarchy, this needs no time zone
        # tables in MySQL when DJANGO_TIME_ZONE is not UTC.
        "created_at",
    )
    list_select_related = ("client",)
    search_fields = (
        "provider_charge_id",
        "=idempotency_key",
        "=provider_idempotency_key",
        "description",
    )
    search_help_text = "Transaction id, provider charge id, idempotency key or description."
    ordering = ("-created_at",)
    actions = ("retry_selected", "reconcile_selected", "cancel_selected")
    inlines = (PaymentAttemptInline,)
    change_form_template = "admin/payments/transaction/change_form.html"
    fieldsets = (
        (None, {"fields": ("id", "client", "amount_formatted", "currency", "source_masked", "description")}),
        (
            "Outcome",
            {
                "fields": (
                    "status",
                    "error",
                    "message",
                    "tries",
                    "next_retry",
                    "review_reason",
                    "status_note",
                )
            },
        ),
        (
            "Keys",
            {"fields": ("idempotency_key", "provider_idempotency_key", "provider_charge_id", "metadata")},
        ),
        ("Dates", {"fields": ("created", "updated", "charge_started")}),
    )
    # Nothing is edited by hand: money and identity never change, and status only
    # through the actions below, which go through the same services as the API.
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    class Media:
        css = {"all": ("payments/admin.css",)}

    @admin.display(description="amount", ordering="amount")
    def amount_formatted(self, obj: Transaction) -> str:
        return format_html(NO_WRAP, obj.amount_display)

    @admin.display(description="error", ordering="error_type")
    def error(self, obj: Transaction) -> str:
        if not obj.error_type:
            return "—"
        return f"{obj.error_type} ({obj.error_code})" if obj.error_code != obj.error_type else obj.error_type

    @admin.display(description="error message")
    def message(self, obj: Transaction) -> str:
        return fixed_message(obj.error_message, obj.error_code) or "—"

    @admin.display(description="tries")
    def tries(self, obj: Transaction) -> str:
        return f"{obj.attempts} of {settings.PAYMENT_MAX_ATTEMPTS}: {attempt_summary(obj.attempt_log.all())}"

    @admin.display(description="next retry", ordering="next_retry_at")
    def next_retry(self, obj: Transaction) -> str:
        if obj.needs_review:
            return "needs review"
        if obj.next_retry_at and timezone.now() - obj.next_retry_at > RETRY_GRACE:
            late = f"overdue by {minutes(timezone.now() - obj.next_retry_at)} min"
            return format_html('<span class="ps-overdue" title="{}">{}</span>', late, when(obj.next_retry_at))
        return format_html(NO_WRAP, when(obj.next_retry_at))

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Transaction) -> str:
        return format_html(NO_WRAP, when(obj.created_at))

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: Transaction) -> str:
        return when(obj.updated_at)

    @admin.display(description="last charge call started")
    def charge_started(self, obj: Transaction) -> str:
        return when(obj.charge_started_at)

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

    # The change page: its state banner and the actions allowed in that state ------

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        txn = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if txn is not None:
            now = timezone.now()
            context["banner"] = state_banner(txn, now=now)
            context["payment_actions"] = allowed_actions(txn, user=request.user, now=now)
            context["attempt_summary"] = attempt_summary(txn.attempt_log.all())
            context["refunds"] = refund_panel(txn, user=request.user)
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        views = {"retry": self.retry_view, "reconcile": self.reconcile_view, "cancel": self.cancel_view}
        return [
            *self.refund_urls(name),  # first: <path:object_id>/reconcile/ would match a refund's
            *(
                path(f"<path:object_id>/{action}/", self.admin_site.admin_view(view), name=f"{name}_{action}")
                for action, view in views.items()
            ),
            *super().get_urls(),
        ]

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._page_action(request, object_id, verb="Retry", action=services.charge_retry)

    def reconcile_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._page_action(request, object_id, verb="Reconcile", action=services.charge_reconcile)

    def _page_action(
        self, request: HttpRequest, object_id: str, *, verb: str, action: Callable[..., ActionResult]
    ) -> HttpResponse:
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        txn = self._target(request, object_id, "retry")
        result = action(transaction_id=txn.pk, actor=request.user.get_username())
        self._log_result(request, txn, verb, result)
        # A lookup's "no charge" detail would only repeat the outcome.
        shown = result.detail and result.outcome != ActionOutcome.NOT_CHARGED
        detail = f" {result.detail}" if shown else ""
        self.message_user(
            request,
            f"{verb}: {RESULT_TEXT[result.outcome]}.{detail}",
            RESULT_LEVEL.get(result.outcome, messages.WARNING),
        )
        return self._back(txn)

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        txn = self._target(request, object_id, "cancel")
        refusal = transitions.cancel_refusal(txn)
        if refusal:
            self.message_user(request, f"Cannot cancel: {refusal}.", messages.WARNING)
            return self._back(txn)
        form = CancelForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            reason = form.cleaned_data["reason"]
            try:
                services.charge_cancel(
                    transaction_id=txn.pk, reason=reason, actor=request.user.get_username()
                )
            except PaymentError as error:
                self.message_user(request, f"Not canceled: {error}", messages.ERROR)
                return self._back(txn)
            self.log_change(request, txn, f"Canceled: {reason}")
            self.message_user(request, f"Canceled: {reason}. It will never be sent again.", messages.SUCCESS)
            return self._back(txn)
        context = {
            **self.admin_site.each_context(request),
            "title": "Cancel this payment",
            "opts": self.opts,
            "original": txn,
            "banner": state_banner(txn, now=timezone.now()),
            "form": form,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/payments/transaction/cancel_one.html", context)

    def _log_result(self, request: HttpRequest, txn: Transaction, verb: str, result: ActionResult) -> None:
        if result.outcome != ActionOutcome.SKIPPED:
            self.log_change(request, txn, f"{verb}: {result.outcome}. {result.detail}".strip())

    @bulk_action(description="Retry selected", permissions=["retry"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Transaction]) -> None:
        actor = request.user.get_username()
        self._run_action(
            request,
            queryset,
            verb="Retry",
            action=lambda txn: services.charge_retry(transaction_id=txn.pk, actor=actor),
        )

    @bulk_action(description="Reconcile with provider", permissions=["retry"])
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
        selected = list(queryset)  # at most ACTION_MAX_ROWS: see bulk_action
        counts: Counter[str] = Counter()
        for txn in selected:
            result = action(txn)
            counts[result.outcome] += 1
            self._log_result(request, txn, verb, result)
        worked = len(selected) - counts[ActionOutcome.SKIPPED]
        shown = [ActionOutcome.SUCCEEDED, ActionOutcome.FAILED, ActionOutcome.SKIPPED]
        shown += [outcome for outcome in ActionOutcome if counts[outcome] and outcome not in shown]
        summary = ", ".join(f"{counts[outcome]} {outcome.value.replace('_', ' ')}" for outcome in shown)
        level = messages.SUCCESS if worked and worked == counts[ActionOutcome.SUCCEEDED] else messages.WARNING
        self.message_user(request, f"{verb} selected: {summary}.", level)

    @bulk_action(description="Cancel…", permissions=["cancel"])
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
            {"transaction": txn, "reason": transitions.cancel_refusal(txn)}
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
