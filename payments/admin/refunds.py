"""Refunds on a transaction's page: Refund… (a form, then a confirmation that shows the amount
in the currency's format), the refund history with each refund's attempts, and a refund's own
Reconcile and Cancel refund. Each goes through payments.services, as the API does; there is
no bulk refund from the list, on purpose (one refund is one decision about one charge)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from payments import refund_transitions, services
from payments.admin.banners import fixed_message, when
from payments.admin.forms import REASON_LABELS, RefundForm
from payments.currencies import format_minor_units
from payments.errors import PaymentError
from payments.models import PaymentAttempt, Refund, Transaction
from payments.outcomes import answer
from payments.services import ActionOutcome, RefundRequest
from payments.transitions import Actor

REFUND_PERMISSION = "payments.refund_transaction"

# What a refund's next step (refund_transitions.refund_next_step) means on the page.
NEXT_STEP_TEXT = {
    "wait": "in flight: its answer is being recorded; reload in a moment",
    "verify": "reconcile_refunds asks the provider (Reconcile asks now)",
    "review": "a person decides: not refunded, nothing automatic (Cancel refund gives up on it)",
    "none": "nothing: final",
}
# What the admin's Reconcile on a refund did.
RECONCILE_TEXT = {
    ActionOutcome.SUCCEEDED: "refunded, the provider made the refund",
    ActionOutcome.DECLINED: "the provider refused the refund, nothing was refunded",
    ActionOutcome.NOT_REFUNDED: "the provider made no refund; nothing was refunded",
    ActionOutcome.UNKNOWN: "the outcome is still unknown",
    ActionOutcome.UNAVAILABLE: "the provider could not be asked, nothing changed",
    ActionOutcome.SKIPPED: "not done",
    ActionOutcome.ERROR: "an unexpected error, the refund is flagged for review",
}
# After Refund…: the truth of the outcome, by the refund answer (payments.outcomes.refunds).
LEVEL = {
    "refund_succeeded": messages.SUCCESS,
    "refund_pending": messages.INFO,
    "refund_outcome_unknown": messages.WARNING,
    "refund_in_progress": messages.WARNING,
}
ADMIN_NEXT = {
    "refund_pending": "Reconcile on the refund, or reconcile_refunds, records its final answer.",
    "refund_outcome_unknown": (
        "It counts against what is left until reconcile_refunds (or Reconcile on the refund) finds out; "
        "do not refund it again."
    ),
    "refund_not_sent": "Refund again, or Cancel refund to give up on it.",
    "refund_in_progress": "This form was just sent and its refund is still being sent: reload in a moment.",
    "refund_unavailable": "Nothing was kept: send this form again later.",
}


def first_sentence(text: str) -> str:
    """An answer's message without its API advice (Idempotency-Key, Retry-After)."""
    return text.split(". ")[0].rstrip(".") + "." if text else ""


def outcome_message(
    name: str, refund: Refund | None, error: PaymentError | None, *, left: int, replayed: bool
) -> str:
    """What Refund… did, in the refund answers' words."""
    currency = refund.currency if refund is not None else ""
    amount = refund.amount_display if refund is not None else ""
    left_text = f" Left to refund: {format_minor_units(left, currency)}." if currency else ""
    if name == "refund_succeeded":
        happened = answer(name).happened
        if replayed:
            return f"Refunded {amount} once: this form had already been sent, nothing was refunded twice."
        return f"Refunded {amount}: {happened[:1].lower()}{happened[1:]}{left_text}"
    if name == "refund_pending":
        return f"Pending with the provider: {amount}. {answer(name).happened} {ADMIN_NEXT[name]}"
    said = first_sentence(error.message if error is not None else answer(name).message)
    if name == "refund_outcome_unknown":
        return f"Outcome unknown, being verified: {amount}. {said} {ADMIN_NEXT[name]}"
    if name == "refund_in_progress":
        return f"Not refunded twice: {ADMIN_NEXT[name]}"
    then = f" {ADMIN_NEXT[name]}" if name in ADMIN_NEXT else ""
    if name == "refund_failed" and refund is not None and refund.error_code:
        then = f" Provider code: {refund.error_code}."
    full = error.message if error is not None and name in ("not_refundable", "refund_too_large") else said
    full = full.removeprefix("Not refunded: ")
    return f"Not refunded: {full[:1].lower()}{full[1:]}{then}"


@dataclass
class RefundRow:
    refund: Refund
    created: str
    reason: str
    next_step: str
    attempts: list[str]  # one line each: number, kind, when, what the provider answered
    may_reconcile: bool
    may_cancel: bool
    cause: str = ""


@dataclass
class RefundPanel:
    """What the page says about refunding this charge, for this user."""

    charged: str
    refunded: str
    left: str
    refusal: str  # why Refund… is not offered ("" when it is)
    may_refund: bool
    refund_all: bool  # the "charged after all" banner's one-click refund of all that is left
    shown: bool  # the history section: a succeeded charge, or one with refunds
    rows: list[RefundRow] = field(default_factory=list)


def attempt_line(attempt: PaymentAttempt) -> str:
    kind = "lookup (asks; never refunds)" if attempt.kind == "refund_lookup" else "refund"
    if not attempt.reached_provider:
        answered = "connection refused, nothing sent"
    else:
        status = f"HTTP {attempt.http_status}" if attempt.http_status else "no HTTP answer"
        answered = f"{status}, {attempt.outcome}"
    return f"#{attempt.number} {kind}, {when(attempt.started_at)}: {answered}"


def refund_panel(txn: Transaction, *, user: AbstractBaseUser) -> RefundPanel:
    left = services.refundable(txn)
    refusal = refund_transitions.refund_refusal(txn)
    if not refusal and left == 0:
        refusal = "nothing is left to refund (refunds made or in flight take all of the charge)"
    may_refund = user.has_perm(REFUND_PERMISSION) and not refusal
    refunds = list(txn.refunds.prefetch_related("attempt_log"))
    reconcilable = set(
        Refund.objects.filter(refund_transitions.refund_reconcilable_q(), transaction=txn).values_list(
            "pk", flat=True
        )
    )
    rows = []
    for refund in refunds:
        step = refund_transitions.refund_next_step(refund)
        next_step = NEXT_STEP_TEXT[step["action"]]
        if step["action"] == "verify" and step["at"]:
            next_step += f"; a lookup proves nothing until {when(step['at'])}"
        cause = fixed_message(refund.error_message, refund.error_code) or refund.error_code
        rows.append(
            RefundRow(
                refund=refund,
                created=when(refund.created_at),
                reason=REASON_LABELS.get(refund.reason, refund.reason),
                next_step=next_step,
                attempts=[attempt_line(a) for a in sorted(refund.attempt_log.all(), key=lambda a: a.number)],
                may_reconcile=refund.pk in reconcilable and user.has_perm("payments.retry_transaction"),
                may_cancel=refund_transitions.refund_resendable(refund) and user.has_perm(REFUND_PERMISSION),
                cause=cause,
            )
        )
    return RefundPanel(
        charged=txn.amount_display,
        refunded=format_minor_units(services.refunded(txn), txn.currency),
        left=format_minor_units(left, txn.currency),
        refusal=refusal,
        may_refund=may_refund,
        refund_all=may_refund and bool(txn.review_reason),
        shown=bool(rows) or txn.status == Transaction.Status.SUCCEEDED,
        rows=rows,
    )


class TransactionRefunds(admin.ModelAdmin):
    """TransactionAdmin's base: the page actions' target and way back, and the refund views."""

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

    def refund_urls(self, name: str) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/refund/", wrap(self.refund_view), name=f"{name}_refund"),
            path(
                "<path:object_id>/refunds/<uuid:refund_id>/reconcile/",
                wrap(self.refund_reconcile_view),
                name=f"{name}_refund_reconcile",
            ),
            path(
                "<path:object_id>/refunds/<uuid:refund_id>/cancel/",
                wrap(self.refund_cancel_view),
                name=f"{name}_refund_cancel",
            ),
        ]

    def refund_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        txn = self._target(request, object_id, "refund")
        data = request.POST if request.method == "POST" else None
        key = data.get("key", "") if data else ""
        # The same form sent again (its key already used): the service replays that refund.
        again = bool(key) and Refund.objects.filter(client=txn.client, idempotency_key=key).exists()
        left = services.refundable(txn)
        refusal = refund_transitions.refund_refusal(txn) or ("" if left else "nothing is left to refund")
        if refusal and not again:
            self.message_user(request, f"Cannot refund: {refusal}.", messages.WARNING)
            return self._back(txn)
        if data is None and request.GET.get("amount") == "all":  # the banner's one click: to confirm
            reason = request.GET.get("reason", "")
            data = {"amount": "", "reason": reason, "note": "", "key": f"admin-{uuid.uuid4()}"}
        form = RefundForm(
            data, charge=txn, left=None if again else left, initial={"key": f"admin-{uuid.uuid4()}"}
        )
        confirming = form.is_bound and "edit" not in form.data and form.is_valid()
        if confirming and "confirm" in form.data:
            return self._refund(request, txn, form)
        context = {
            **self.admin_site.each_context(request),
            "title": "Refund this payment" if not confirming else "Confirm the refund",
            "opts": self.opts,
            "original": txn,
            "form": form,
            "confirming": confirming,
            "left": format_minor_units(left, txn.currency),
            "charged": txn.amount_display,
            "media": self.media,
        }
        if confirming:
            amount = form.cleaned_data["amount"]
            context["amount"] = format_minor_units(amount, txn.currency)
            context["left_after"] = format_minor_units(max(left - amount, 0), txn.currency)
            context["reason_label"] = REASON_LABELS[form.cleaned_data["reason"]]
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/payments/transaction/refund_one.html", context)

    def _refund(self, request: HttpRequest, txn: Transaction, form: RefundForm) -> HttpResponse:
        values = form.cleaned_data
        refund: Refund | None = None
        error: PaymentError | None = None
        try:
            done = services.refund_create(
                charge_id=txn.pk,
                client=txn.client,
                request=RefundRequest(reason=values["reason"], amount=values["amount"], note=values["note"]),
                idempotency_key=values["key"],
                by=Actor.SUPPORT,
                requested_by=f"support {request.user.get_username()}",
            )
        except PaymentError as raised:
            error, refund = raised, raised.refund
            name = raised.answer_name
            replayed = raised.replayed
        else:
            refund, replayed = done.refund, done.replayed
            name = refund_transitions.refund_answer_name(refund)
        text = outcome_message(name, refund, error, left=services.refundable(txn), replayed=replayed)
        if refund is not None and not replayed:
            self.log_change(
                request, txn, f"Refund {refund.amount_display} ({refund.reason}): {refund.status}."
            )
        self.message_user(request, text, LEVEL.get(name, messages.ERROR))
        return self._back(txn)

    def _refund_target(
        self, request: HttpRequest, object_id: str, refund_id: uuid.UUID, permission: str
    ) -> tuple[Transaction, Refund]:
        txn = self._target(request, object_id, permission)
        refund = Refund.objects.filter(pk=refund_id, transaction=txn).first()
        if refund is None:
            raise Http404("No such refund of this transaction.")
        return txn, refund

    def refund_reconcile_view(
        self, request: HttpRequest, object_id: str, refund_id: uuid.UUID
    ) -> HttpResponse:
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        txn, refund = self._refund_target(request, object_id, refund_id, "retry")
        result = services.refund_reconcile(refund_id=refund.pk, actor=request.user.get_username())
        if result.outcome != ActionOutcome.SKIPPED:
            self.log_change(request, txn, f"Reconcile refund {refund.amount_display}: {result.outcome}.")
        detail = f" {result.detail[:1].upper()}{result.detail[1:]}." if result.detail else ""
        if result.outcome == ActionOutcome.SUCCEEDED:
            detail = ""
        level = messages.SUCCESS if result.outcome == ActionOutcome.SUCCEEDED else messages.WARNING
        text = f"Reconcile refund of {refund.amount_display}: {RECONCILE_TEXT[result.outcome]}.{detail}"
        self.message_user(request, text, level)
        return self._back(txn)

    def refund_cancel_view(self, request: HttpRequest, object_id: str, refund_id: uuid.UUID) -> HttpResponse:
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        txn, refund = self._refund_target(request, object_id, refund_id, "refund")
        try:
            services.refund_cancel(refund_id=refund.pk, actor=request.user.get_username())
        except PaymentError as error:
            self.message_user(request, f"Not canceled: {error.message}", messages.ERROR)
            return self._back(txn)
        self.log_change(request, txn, f"Refund {refund.amount_display} canceled.")
        text = f"Refund of {refund.amount_display} canceled: nothing was refunded; never sent again."
        self.message_user(request, text, messages.SUCCESS)
        return self._back(txn)
