"""The "needs attention" groups and the list's filters."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import SEARCH_VAR, ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from payments import selectors
from payments.admin.banners import RETRY_GRACE, minutes
from payments.models import Transaction

# The "needs attention" groups: the admin index counts each, and the list filters by them.
ATTENTION: dict[str, tuple[str, Callable[[datetime], QuerySet[Transaction]]]] = {
    "reconcile": (
        "Outcome unknown, past the reconcile window",
        lambda now: selectors.attention_to_reconcile(),
    ),
    "overdue": (
        f"Retry overdue by over {minutes(RETRY_GRACE)} min",
        lambda now: selectors.attention_overdue_retries(now=now, grace=RETRY_GRACE),
    ),
    "review": ("Needs review", lambda now: selectors.attention_needs_review()),
    "charged_late": ("Charged after cancel", lambda now: selectors.attention_charged_late()),
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
