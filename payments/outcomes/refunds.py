"""A refund's answers."""

from __future__ import annotations

from payments.outcomes.answer import MAYBE, NO, YES, Answer

# A refund's answers: `charged` says whether the money went back. The same rule: "not refunded"
# only when no request reached the provider, or a lookup proved there was no refund at a time
# when no attempt could still be in flight; a 5xx or 429 on a refund proves nothing (unlike a
# charge's), so nothing re-sends a refund on the provider's word that it did nothing.
REFUND_ANSWERS: tuple[Answer, ...] = (
    Answer(
        name="refund_succeeded",
        happened="The provider refunded the amount.",
        status="succeeded",
        error_type="",
        code="",
        http_status=201,
        retryable=False,
        charged=YES,
        next_step="Nothing: final.",
        message="",
        page="",
        operation="refund",
    ),
    Answer(
        name="refund_pending",
        happened="The provider accepted the refund and settles it later (its status pending).",
        status="pending",
        error_type="",
        code="",
        http_status=202,
        retryable=False,
        charged=MAYBE,
        next_step="`reconcile_refunds` looks it up and records the provider's final answer.",
        message="",
        page="",
        operation="refund",
    ),
    Answer(
        name="refund_outcome_unknown",
        happened=(
            "A refund request may have reached the provider but no definitive answer came back: a "
            "timeout, a broken connection, a 409 in flight, a 5xx or 429, an answer that cannot be "
            "trusted or is for another refund (`answer_mismatch`), or a process stopped mid-call."
        ),
        status="unknown",
        error_type="outcome_unknown",
        code="<cause>",
        http_status=504,
        retryable=True,
        charged=MAYBE,
        next_step=(
            "`reconcile_refunds` asks the provider once no attempt can be in flight (`next_step.at`). "
            "It still counts against what is left to refund; never sent again with a new key."
        ),
        message=(
            "The payment provider may have made this refund; the outcome is being verified. Sending "
            "the same request with the same Idempotency-Key is safe: it never refunds twice."
        ),
        page="",
        operation="refund",
    ),
    Answer(
        name="refund_failed",
        happened="The provider refused the refund (its status failed, or 400/422).",
        status="failed",
        error_type="refund_failed",
        code="refund_failed",
        http_status=402,
        retryable=False,
        charged=NO,
        next_step="Nothing: final. `error.provider_code` is the provider's reason, when it gave one.",
        message="The payment provider refused this refund. Nothing was refunded.",
        page="",
        operation="refund",
    ),
    Answer(
        name="refund_not_sent",
        happened=(
            "No connection to the provider could be opened (`connection_error`), or a lookup proved "
            "the provider made no refund (`not_refunded`)."
        ),
        status="failed",
        error_type="provider_error",
        code="<cause>",
        http_status=502,
        retryable=True,
        charged=NO,
        next_step=(
            "Nothing automatic. Sending the same request with the same Idempotency-Key sends it again "
            "with the same provider key; support may cancel it."
        ),
        message="Not refunded: the payment provider could not take the refund. Sending it again is safe.",
        page="",
        operation="refund",
    ),
    Answer(
        name="refund_in_progress",
        happened="Another request with this Idempotency-Key is sending this refund right now.",
        status="pending",
        error_type="idempotency_error",
        code="request_in_progress",
        http_status=409,
        retryable=True,
        charged=MAYBE,
        next_step="The request in flight settles it; retry after Retry-After to get its outcome.",
        message="A request with this Idempotency-Key is still in progress; retry shortly to get its outcome.",
        page="",
        operation="refund",
    ),
    Answer(
        name="refund_canceled",
        happened="Support gave up on a refund that was not made.",
        status="canceled",
        error_type="refund_canceled",
        code="refund_canceled",
        http_status=409,
        retryable=False,
        charged=NO,
        next_step="Nothing: final, never sent again.",
        message="This refund was canceled; nothing was refunded.",
        page="",
        operation="refund",
    ),
    Answer(
        name="refund_unavailable",
        happened=(
            "Nothing was sent: the breaker is open (`circuit_open`), too many calls are waiting on the "
            "provider (`provider_busy`), or the provider refused our credentials or URL "
            "(`provider_misconfigured`)."
        ),
        status="-",
        error_type="provider_unavailable",
        code="<cause>",
        http_status=503,
        retryable=True,
        charged=NO,
        next_step="Nothing: no refund was kept. Send the request again after Retry-After.",
        message=(
            "The payment provider is unavailable. Nothing was refunded and nothing was kept; try again later."
        ),
        page="",
        operation="refund",
    ),
    Answer(
        name="not_refundable",
        happened=(
            "A refund for a charge that is not known to have succeeded (unknown, pending, declined, failed)."
        ),
        status="-",
        error_type="invalid_request",
        code="charge_not_refundable",
        http_status=409,
        retryable=False,
        charged=NO,
        next_step=(
            "Nothing changes; `error.message` says why (a charge of unknown outcome is reconciled first)."
        ),
        message="This charge cannot be refunded now.",
        page="",
        operation="refund",
    ),
    Answer(
        name="refund_too_large",
        happened=(
            "More than is left to refund: the charge less its succeeded, pending and unknown refunds "
            "(a refund in flight counts)."
        ),
        status="-",
        error_type="invalid_request",
        code="amount_exceeds_refundable",
        http_status=422,
        retryable=False,
        charged=NO,
        next_step="Nothing: nothing was written or sent. `error.refundable` is what is left.",
        message="The amount is more than is left to refund.",
        page="",
        operation="refund",
    ),
)
