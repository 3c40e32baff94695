"""A charge's answers, the rows of README's Guarantees table."""

from __future__ import annotations

from payments.outcomes.answer import MAYBE, NO, YES, Answer

ANSWERS: tuple[Answer, ...] = (
    Answer(
        name="succeeded",
        happened="The provider charged the card.",
        status="succeeded",
        error_type="",
        code="",
        http_status=201,
        retryable=False,
        charged=YES,
        next_step="Nothing: final.",
        message="",
        page="Payment received.",
    ),
    Answer(
        name="declined",
        happened="The provider declined the card (402, or a charge with status declined).",
        status="declined",
        error_type="card_error",
        code="card_declined",
        http_status=402,
        retryable=False,
        charged=NO,
        next_step="Nothing: final. `error.decline_code` says why.",
        message="The card was declined. Nothing was charged.",
        page="Your card was declined. You have not been charged. Try another card.",
    ),
    Answer(
        name="rejected",
        happened="The provider refused the request itself (400/422: an unknown token, say).",
        status="declined",
        error_type="provider_rejected",
        code="provider_rejected",
        http_status=422,
        retryable=False,
        charged=NO,
        next_step=(
            "Nothing: final. `error.provider_code` is the provider's reason, when it gave one; "
            "sending the same request again cannot succeed."
        ),
        message="The payment provider refused this payment's details. Nothing was charged.",
        page="The payment provider refused these card details. You have not been charged.",
    ),
    Answer(
        name="outcome_unknown",
        happened=(
            "A request may have reached the provider but no definitive answer came back: a read "
            "timeout (`provider_timeout`), a connection broken after sending (`connection_dropped`), "
            "a 409 for a key still in flight (`request_in_flight`), an answer that cannot be trusted "
            "(`unusable_answer`), an answer for another amount, currency or key (`answer_mismatch`, "
            "flagged for review), a process stopped mid-call (`interrupted`), or the outcome could not "
            "be saved (`settle_failed`)."
        ),
        status="unknown",
        error_type="outcome_unknown",
        code="<cause>",
        http_status=504,
        retryable=True,
        charged=MAYBE,
        next_step=(
            "`reconcile_payments` asks the provider once no attempt can be in flight "
            "(`next_step.at`) and records what it finds. Never canceled while unknown."
        ),
        message=(
            "The payment provider may have charged this payment; the outcome is being verified. "
            "Retrying with the same Idempotency-Key is safe: it never charges twice and returns the "
            "outcome once known. Do not start a new payment."
        ),
        page=(
            "We could not confirm this payment yet; you may have been charged. We are checking with "
            "the payment provider. Try again is safe and never charges twice. Do not start a new payment."
        ),
    ),
    Answer(
        name="retry_scheduled",
        happened=(
            "The provider answered that it did not charge (5xx `provider_error`, 429 `rate_limited`), "
            "no connection could be opened (`connection_error`), or a lookup proved no charge was made "
            "(`not_charged`)."
        ),
        status="failed",
        error_type="provider_error",
        code="<cause>",
        http_status=502,
        retryable=True,
        charged=NO,
        next_step=(
            "`retry_failed_payments` sends it again with the same provider key at `next_retry_at`, "
            "unless it is canceled first (`POST /api/v1/charges/{id}/cancel`)."
        ),
        message=(
            "Not charged yet: the payment provider could not take the payment. It will be tried "
            "again automatically at next_retry_at; cancel it to stop that. Retrying now with the "
            "same Idempotency-Key is also safe. Do not start a new payment unless you cancel this one."
        ),
        page=(
            "Not charged yet: the payment provider could not take the payment. We will try again "
            "automatically. Try again now is safe, or cancel the payment."
        ),
    ),
    Answer(
        name="needs_review",
        happened="Tries ran out (PAYMENT_MAX_ATTEMPTS) without a charge, or a support command hit an error.",
        status="failed",
        error_type="provider_error",
        code="attempts_exhausted",
        http_status=502,
        retryable=False,
        charged=NO,
        next_step="Nothing automatic: never sent again. Support sees it under Needs review.",
        message=(
            "Not charged: the payment provider failed on every try. This payment will not be sent "
            "again; cancel it and start a new payment if you still want to pay."
        ),
        page="Not charged: the payment could not be completed. Cancel it and start a new payment.",
    ),
    Answer(
        name="provider_unavailable",
        happened=(
            "Nothing was sent: the breaker is open (`circuit_open`), too many charges are waiting on the "
            "provider (`provider_busy`), or the provider refused our credentials or URL "
            "(`provider_misconfigured`, an operator alarm)."
        ),
        status="-",
        error_type="provider_unavailable",
        code="<cause>",
        http_status=503,
        retryable=True,
        charged=NO,
        next_step="Nothing: no transaction was kept. Send the request again after Retry-After.",
        message=(
            "The payment provider is unavailable. Nothing was charged and nothing was kept; try again later."
        ),
        page="Payments are unavailable right now. You have not been charged. Try again in a moment.",
    ),
    Answer(
        name="in_progress",
        happened="Another request with this Idempotency-Key is being worked on right now.",
        status="pending",
        error_type="idempotency_error",
        code="request_in_progress",
        http_status=409,
        retryable=True,
        charged=MAYBE,
        next_step="The request in flight settles it; retry after Retry-After to get its outcome.",
        message="A request with this Idempotency-Key is still in progress; retry shortly to get its outcome.",
        page="This payment is still being processed. Try again in a moment; it never charges twice.",
    ),
    Answer(
        name="key_reused",
        happened="The Idempotency-Key was used before with a different request body.",
        status="-",
        error_type="idempotency_error",
        code="idempotency_key_reused",
        http_status=409,
        retryable=False,
        charged=NO,
        next_step="Nothing: this request was not sent. The first request's payment is unaffected.",
        message="This Idempotency-Key was used with a different request body.",
        page="This payment conflicts with an earlier one. Start a new payment.",
    ),
    Answer(
        name="canceled",
        happened="Support or the caller canceled the payment before it was charged.",
        status="canceled",
        error_type="charge_canceled",
        code="charge_canceled",
        http_status=409,
        retryable=False,
        charged=NO,
        next_step="Nothing: final, never sent again.",
        message="This payment was canceled and will not be charged.",
        page="This payment was canceled. You have not been charged, and it will never be sent again.",
    ),
    Answer(
        name="database_busy",
        happened="No database connection was free within DB_ACQUIRE_TIMEOUT before anything was sent.",
        status="-",
        error_type="database_busy",
        code="pool_exhausted",
        http_status=503,
        retryable=True,
        charged=NO,
        next_step="Nothing: nothing was sent. Send the same request again after Retry-After.",
        message="The service is busy; nothing was sent to the payment provider. Try again shortly.",
        page="The service is busy. You have not been charged. Try again in a moment.",
    ),
    Answer(
        name="database_unavailable",
        happened="The database could not be reached before anything was sent.",
        status="-",
        error_type="database_busy",
        code="database_unavailable",
        http_status=503,
        retryable=True,
        charged=NO,
        next_step="Nothing: nothing was sent. Send the same request again after Retry-After.",
        message=(
            "The service cannot reach its database; nothing was sent to the payment provider. "
            "Try again shortly."
        ),
        page="The service is busy. You have not been charged. Try again in a moment.",
    ),
    Answer(
        name="not_cancelable",
        happened="A cancel for a payment that is charged, may be charged, or is in flight.",
        status="-",
        error_type="invalid_request",
        code="not_cancelable",
        http_status=409,
        retryable=False,
        charged=MAYBE,
        next_step="Nothing changes; `error.message` says why (reconcile first while the outcome is unknown).",
        message="This payment cannot be canceled.",
        page="This payment cannot be canceled now.",
    ),
    Answer(
        name="invalid_request",
        happened="The request was refused before anything was written (bad field, header or JSON).",
        status="-",
        error_type="invalid_request",
        code="invalid_fields",
        http_status=400,
        retryable=False,
        charged=NO,
        next_step="Nothing: nothing was written or sent.",
        message="The request is invalid.",
        page="Please correct the highlighted fields. Nothing was charged.",
    ),
    Answer(
        name="internal_error",
        happened="An error the service did not expect (a bug).",
        status="-",
        error_type="internal_error",
        code="internal_error",
        http_status=500,
        retryable=True,
        charged=MAYBE,
        next_step="Operators are alerted. Retrying with the same Idempotency-Key is safe.",
        message=(
            "Something went wrong on our side. Retrying with the same Idempotency-Key is safe and "
            "never charges twice."
        ),
        page="Something went wrong. Try again is safe and never charges twice.",
    ),
)
