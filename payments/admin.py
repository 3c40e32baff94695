"""The support staff's view of payments: what happened to each one, what waits for a person,
and the safe next step, taken only through the services the API and the commands use."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import SEARCH_VAR, ChangeList
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timezone import localtime

from payments import provider, selectors, services
from payments.exceptions import PaymentError
from payments.forms import CancelForm
from payments.models import PaymentAttempt, Transaction
from payments.outcomes import answer
from payments.serializers import next_step
from payments.services import ActionOutcome, ActionResult

# Each retry or lookup is a provider call made while the support user waits.
ACTION_MAX_ROWS = 50
NO_WRAP = '<span style="white-space: nowrap">{}</span>'
# An automatic retry this late means retry_failed_payments is probably not running.
RETRY_GRACE = timedelta(minutes=10)
# The one date format of the admin: in settings.TIME_ZONE, the zone named.
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
Status = Transaction.Status
# The list must fit a 1366 px screen: the navigation sidebar would take 275 px of it, to
# list the one model support works with (Home and the breadcrumbs lead there too).
admin.site.enable_nav_sidebar = False


def when(value: datetime | None) -> str:
    return localtime(value).strftime(DATE_FORMAT) if value else "—"


# Exception text that rows stored before messages were fixed may hold (host names, ports, URLs).
RAW_ERROR = re.compile(r"ConnectionPool\(|Max retries|Traceback|Error\(|://|\bhost=|\bport=")
# Codes of those older rows, by the cause they stand for today.
LEGACY_CODES = {"provider_connection_error": provider.Cause.CONNECTION_ERROR}


def fixed_message(message: str, code: str, http_status: int | None = None) -> str:
    """The stored message, or the code's fixed description when it holds raw exception text:
    the admin never shows host names, ports, URLs or exception reprs (the logs have them)."""
    if not RAW_ERROR.search(message):
        return message
    try:
        cause = provider.Cause(LEGACY_CODES.get(code, code))
    except ValueError:
        return "Details are in the logs under this transaction's id."
    return provider.describe(cause, http_status)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def attempt_summary(attempts: Iterable[PaymentAttempt]) -> str:
    """What the HTTP attempts did: only those that reached the provider are said to have."""
    charges = [a for a in attempts if a.kind != "lookup"]
    lookups = [a for a in attempts if a.kind == "lookup"]
    reached = sum(a.reached_provider for a in charges)
    parts = [f"{plural(reached, 'charge attempt')} reached the provider"]
    if refused := len(charges) - reached:
        parts.append(f"{plural(refused, 'refused connection')}, nothing sent")
    if lookups:
        parts.append(plural(len(lookups), "lookup"))
    return "; ".join(parts)


@dataclass(frozen=True)
class Banner:
    """The change page's answer to "what happened, what now"."""

    level: str  # success, info, warning or error (the admin's message colours)
    title: str
    lines: tuple[str, ...] = ()


def _tail(sentence: str) -> str:
    """An outcome table sentence after a colon."""
    return sentence[:1].lower() + sentence[1:]


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def state_banner(txn: Transaction, *, now: datetime) -> Banner:
    """A plain-language summary by state, in the words of payments.outcomes where they fit."""
    review = (f"Needs review: {txn.review_reason}.",) if txn.needs_review else ()
    if txn.status == Status.SUCCEEDED:
        charge_id = (f"Provider charge id: {txn.provider_charge_id}.",) if txn.provider_charge_id else ()
        return Banner("success", f"Succeeded: {_tail(answer('succeeded').happened)}", charge_id)
    if txn.status == Status.DECLINED:
        if txn.error_type == Transaction.ErrorType.CARD_ERROR:
            why = f"Decline code: {txn.error_code or 'none given'}."
            return Banner("info", f"Declined: {_tail(answer('declined').message)}", (why, "Final."))
        why = f"Provider code: {txn.error_code or 'none given'}."
        return Banner("info", f"Declined: {_tail(answer('rejected').message)}", (why, "Final."))
    if txn.status == Status.CANCELED:
        note = f"Reason: {txn.status_note}." if txn.status_note else "No reason was recorded."
        return Banner("info", f"Canceled: {_tail(answer('canceled').message)}", (note,))
    if txn.status == Status.UNKNOWN:
        return _unknown_banner(txn, now=now, extra=review)
    if txn.status == Status.PENDING:
        since = txn.updated_at
        if since and since < now - services.reconcile_after():
            return Banner(
                "warning",
                "Abandoned: the provider may have charged; Reconcile asks it.",
                (
                    f"Pending since {when(since)}, longer than the reconcile window "
                    f"({settings.PAYMENT_RECONCILE_AFTER_S} s): the process sending it stopped mid-call.",
                    *review,
                ),
            )
        return Banner(
            "info",
            "In flight: a request is sending it to the provider right now.",
            (answer("in_progress").next_step, "Reload in a moment.", *review),
        )
    return _failed_banner(txn, now=now)


def _unknown_banner(txn: Transaction, *, now: datetime, extra: tuple[str, ...]) -> Banner:
    at = next_step(txn)["at"]
    cause = fixed_message(txn.error_message, txn.error_code)
    lines = [f"What happened: {cause} ({txn.error_code})." if cause else f"Cause: {txn.error_code}."]
    if at and now < at:
        lines.append(
            f"An attempt may still be in flight until {when(at)}: a lookup before then proves nothing."
        )
    else:
        lines.append(
            f"No attempt can be in flight since {when(at)}: a lookup gives a definite answer "
            "(reconcile_payments also asks on its own)."
        )
    lines.append("Do not cancel it or ask the customer to pay again while the outcome is unknown.")
    return Banner(
        "warning", "Outcome unknown: the provider may have charged; Reconcile asks it.", (*lines, *extra)
    )


def _failed_banner(txn: Transaction, *, now: datetime) -> Banner:
    what = fixed_message(txn.error_message, txn.error_code)
    what_line = f"What happened: {what} ({txn.error_code})." if what else f"Cause: {txn.error_code}."
    if txn.error_code == selectors.NOT_CHARGED_CODE:
        what_line = "A lookup proved the provider made no charge."
    tries = f"Tries: {txn.attempts} of {settings.PAYMENT_MAX_ATTEMPTS}."
    step = next_step(txn)
    if step["action"] == "retry":
        late = now - step["at"]
        schedule = f"Automatic retry scheduled at {when(step['at'])}."
        level = "info"
        if _minutes(late) >= 1:
            schedule += f" Overdue by {_minutes(late)} min."
            if late > RETRY_GRACE:
                schedule += " Is retry_failed_payments running?"
                level = "warning"
        return Banner(level, "Not charged: retry is safe.", (what_line, schedule, tries))
    spent = txn.attempts >= settings.PAYMENT_MAX_ATTEMPTS
    reason = txn.review_reason or (
        "the attempt limit is spent" if spent else "no automatic retry is scheduled"
    )
    left = (
        "Retry now sends it once more; or cancel it and let the customer start a new payment."
        if not spent
        else "No tries left: cancel it, and the customer starts a new payment."
    )
    return Banner(
        "error",
        "Needs review: not charged, and never sent again automatically.",
        (f"Why: {reason}.", what_line, tries, left),
    )


def allowed_actions(txn: Transaction, *, user: AbstractBaseUser, now: datetime) -> list[str]:
    """The support actions this user may take on this payment in its state."""
    actions = []
    may_retry = user.has_perm("payments.retry_transaction")
    if may_retry and txn.status == Status.FAILED and txn.attempts < settings.PAYMENT_MAX_ATTEMPTS:
        actions.append("retry")
    abandoned = txn.status == Status.PENDING and txn.updated_at < now - services.reconcile_after()
    if may_retry and (txn.status == Status.UNKNOWN or abandoned):
        actions.append("reconcile")
    if user.has_perm("payments.cancel_transaction") and txn.status == Status.FAILED:
        actions.append("cancel")
    return actions


# What a retry or reconcile on the change page did, in the support person's words.
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


# The "needs attention" groups: the admin index counts each, and the list filters by them.
ATTENTION: dict[str, tuple[str, Callable[[datetime], QuerySet[Transaction]]]] = {
    "reconcile": (
        "Outcome unknown, past the reconcile window",
        lambda now: selectors.attention_to_reconcile(now=now, reconcile_after=services.reconcile_after()),
    ),
    "overdue": (
        f"Retry overdue by over {_minutes(RETRY_GRACE)} min",
        lambda now: selectors.attention_overdue_retries(
            now=now, grace=RETRY_GRACE, max_attempts=settings.PAYMENT_MAX_ATTEMPTS
        ),
    ),
    "review": ("Needs review", lambda now: selectors.attention_needs_review()),
}


def attention_counts() -> list[dict[str, Any]]:
    now = timezone.now()
    changelist = reverse("admin:payments_transaction_changelist")
    return [
        {"key": key, "label": label, "count": rows(now).count(), "url": f"{changelist}?attention={key}"}
        for key, (label, rows) in ATTENTION.items()
    ]


class StatusFilter(admin.SimpleListFilter):
    """Status, defaulting to failed: the list opens on what support has to look at."""

    title = "status"
    parameter_name = "status"
    ALL = "all"

    def __init__(
        self, request: HttpRequest, params: dict, model: type, model_admin: admin.ModelAdmin
    ) -> None:
        super().__init__(request, params, model, model_admin)
        # A search looks through every status (a customer's transaction id, say), and so does
        # a "needs attention" group.
        wide = request.GET.get(SEARCH_VAR) or request.GET.get(AttentionFilter.parameter_name)
        self.default = self.ALL if wide else Transaction.Status.FAILED

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


class AttentionFilter(admin.SimpleListFilter):
    """What waits for a person; the admin index shows each group's count."""

    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in ATTENTION.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Transaction]) -> QuerySet[Transaction]:
        if self.value() not in ATTENTION:
            return queryset
        _, rows = ATTENTION[self.value()]
        return queryset.filter(pk__in=rows(timezone.now()).values("pk"))


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
        return "lookup (asks; never charges)" if attempt.kind == "lookup" else attempt.kind

    @admin.display(description="started")
    def started(self, attempt: PaymentAttempt) -> str:
        return format_html(NO_WRAP, when(attempt.started_at))

    @admin.display(description="reached the provider")
    def reached(self, attempt: PaymentAttempt) -> str:
        return "yes" if attempt.reached_provider else "no: connection refused, nothing sent"

    @admin.display(description="message")
    def shown(self, attempt: PaymentAttempt) -> str:
        return fixed_message(attempt.message, attempt.outcome, attempt.http_status)

    def has_add_permission(self, request: HttpRequest, obj: Transaction | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Transaction | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Transaction | None = None) -> bool:
        return False


@admin.register(Transaction)
class TransactionAdmin(admin.ModelAdmin):
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
            late = f"overdue by {_minutes(timezone.now() - obj.next_retry_at)} min"
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
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        views = {"retry": self.retry_view, "reconcile": self.reconcile_view, "cancel": self.cancel_view}
        return [
            *(
                path(f"<path:object_id>/{action}/", self.admin_site.admin_view(view), name=f"{name}_{action}")
                for action, view in views.items()
            ),
            *super().get_urls(),
        ]

    def _target(self, request: HttpRequest, object_id: str, permission: str) -> Transaction:
        if not request.user.has_perm(f"payments.{permission}_transaction"):
            raise PermissionDenied
        txn = self.get_object(request, unquote(object_id))
        if txn is None:
            raise Http404("No such transaction.")
        return txn

    def _back(self, txn: Transaction) -> HttpResponseRedirect:
        return HttpResponseRedirect(
            reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[quote(txn.pk)])
        )

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
        refusal = selectors.cancel_refusal(txn)
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
            self._log_result(request, txn, verb, result)
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
