"""Reading one provider answer: its status and body checked at the boundary.

Anything that cannot be trusted (not JSON, a bad id, an odd status) is an unknown outcome,
never a failure: the provider may have charged. Absence is proved only by the provider's own
typed answer: a 404 with the JSON error code `resource_missing` to a lookup (its documented
route, no redirect followed). Any other 404 (a proxy's HTML page, a router with no route) says
nothing about the charge: unknown on a lookup, and on the charge route a misconfigured URL.

A charge in an answer is checked against what was asked (`Asked`): an amount, currency,
idempotency key or reference that differs is written into `ProviderResult.mismatch` for
settlement to flag. A charge answer stays what it says (a success is a fact to record); a
lookup's answer for another key or reference proves nothing about ours, and is unknown.

Refunds (`REFUND`, `REFUND_LOOKUP`) are read the same way, with their own answer: a refund
(`id`, `status` succeeded/pending/failed, `amount`, `charge`). A typed 404 `resource_missing`
is NOT_FOUND on both (no such charge to refund; no such refund yet); a refund for another amount
or charge sets `mismatch`, and on a refund lookup one for another charge is unknown.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import math
import re
from dataclasses import dataclass
from typing import Any

import requests

from payments.provider.interface import CAUSES, Cause, Outcome, ProviderResult, describe

CHARGE_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The provider's error code for "no charge was made with this key" (its lookup's 404).
NO_SUCH_CHARGE = "resource_missing"
CHARGE, LOOKUP = "charge", "lookup"
REFUND, REFUND_LOOKUP = "refund", "refund_lookup"
REFUND_KINDS = frozenset({REFUND, REFUND_LOOKUP})
# A refund answer's status -> the call's outcome and the attempt's cause.
REFUND_STATUSES: dict[str, tuple[Outcome, Cause]] = {
    "succeeded": (Outcome.SUCCEEDED, Cause.SUCCEEDED),
    "failed": (Outcome.DECLINED, Cause.DECLINED),
    "pending": (Outcome.PENDING, Cause.PENDING),
}
MISMATCH_MAX_LENGTH = 255
# The longest wait a provider's Retry-After may ask for; more is read as this.
RETRY_AFTER_MAX_S = 3600
_DELTA_SECONDS = re.compile(r"[0-9]+")  # ASCII digits only: "²".isdigit() is true, int("²") raises


def parse_retry_after(value: str | None) -> int | None:
    """The seconds a Retry-After header asks for, clamped to 0..RETRY_AFTER_MAX_S; None when
    it says nothing usable. Only ASCII delta-seconds or an HTTP-date (RFC 9110) are read."""
    text = (value or "").strip(" \t")
    if _DELTA_SECONDS.fullmatch(text):
        digits = text.lstrip("0") or "0"  # no int() of a huge string: it may raise, and is slow
        return RETRY_AFTER_MAX_S if len(digits) > 9 else min(int(digits), RETRY_AFTER_MAX_S)
    if not text.isascii() or not text:
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, as HTTP-dates are
        when = when.replace(tzinfo=datetime.UTC)
    seconds = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
    return max(0, min(RETRY_AFTER_MAX_S, math.ceil(seconds)))


@dataclass(frozen=True)
class Asked:
    """What a call asked the provider for: an answer is checked against the fields given."""

    kind: str  # CHARGE, LOOKUP, REFUND or REFUND_LOOKUP
    provider_key: str  # the request's Idempotency-Key: a refund's own key on refunds
    amount: int | None = None
    currency: str | None = None
    reference: str | None = None
    # Refunds: the charge's provider id the refund must be for ("" when not known).
    charge_id: str = ""


def cause_of_status(http_status: int) -> Cause:
    """The cause an answer's status alone implies (a 2xx body is checked separately)."""
    if 200 <= http_status < 300:
        return Cause.SUCCEEDED
    if http_status == 402:
        return Cause.DECLINED
    if http_status in (400, 422):
        # The provider refused this request (an unknown token, say): sending the same body
        # again cannot succeed, and nothing was charged.
        return Cause.REJECTED
    if http_status in (401, 403):
        return Cause.MISCONFIGURED
    if http_status == 409:
        return Cause.IN_FLIGHT
    if http_status == 429:
        return Cause.RATE_LIMITED
    if http_status >= 500:
        return Cause.PROVIDER_ERROR
    # 404: only a lookup's typed answer proves anything (see result_from_response).
    # 1xx/3xx: redirects are not followed; nothing says what happened.
    return Cause.UNUSABLE


def _json_object(response: requests.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except (ValueError, RecursionError):  # RecursionError: a deeply nested answer
        return None
    return data if isinstance(data, dict) else None


def cause_of_answer(result: ProviderResult) -> Cause:
    """The last attempt's cause: a checked answer's code names it, but a decline's or a
    refusal's is the provider's reason."""
    if result.outcome == Outcome.DECLINED:
        return Cause.DECLINED
    return Cause.REJECTED if result.outcome == Outcome.REJECTED else Cause(result.code)


def _unusable(http_status: int, why: str) -> ProviderResult:
    return ProviderResult(
        outcome=Outcome.UNKNOWN, http_status=http_status, code=Cause.UNUSABLE.value, message=why
    )


def _no_such_charge(response: requests.Response, error: dict) -> bool:
    """The provider's typed "no charge with this key": JSON, with its error code."""
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return content_type == "application/json" and error.get("code") == NO_SUCH_CHARGE


def _answer_to_404(response: requests.Response, error: dict, *, kind: str) -> ProviderResult:
    if kind in REFUND_KINDS:
        # The refund route's typed answer: no charge with this key to refund (nothing refunded),
        # or, on a refund lookup, no refund with this key (yet). Anything else says nothing.
        if _no_such_charge(response, error):
            what = "no such charge" if kind == REFUND else "no such refund"
            return ProviderResult(
                outcome=Outcome.NOT_FOUND, http_status=404, code=Cause.NOT_FOUND.value, message=what
            )
        return _unusable(404, "HTTP 404 that is not the provider's typed resource_missing answer")
    if kind == CHARGE:
        # The charge route itself is missing (a wrong PAYMENT_SERVICE_URL, a proxy with no
        # route): nothing reached a charging endpoint; an operator must act.
        return ProviderResult(
            outcome=Outcome.MISCONFIGURED,
            http_status=404,
            code=Cause.MISCONFIGURED.value,
            message="HTTP 404 on the charge route: check PAYMENT_SERVICE_URL",
        )
    if _no_such_charge(response, error):
        return ProviderResult(
            outcome=Outcome.NOT_FOUND, http_status=404, code=Cause.NOT_FOUND.value, message="no such charge"
        )
    return _unusable(404, "HTTP 404 that is not the provider's typed no-such-charge answer")


_SHOWABLE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _show(value: object) -> str:
    """A provider's value, fit to log and store (anything odd is not repeated)."""
    if type(value) is int or (isinstance(value, str) and _SHOWABLE.match(value)):
        return str(value)
    return "<unusable>"


def mismatch_of(charge: dict[str, Any], asked: Asked) -> tuple[str, bool]:
    """What in an answer's charge differs from the request, and whether it is another charge's
    (another idempotency key or reference). Fields the answer leaves out are not checked."""
    parts: list[str] = []
    amount, currency = charge.get("amount"), charge.get("currency")
    amount_differs = (
        asked.amount is not None
        and "amount" in charge
        and not (type(amount) is int and amount == asked.amount)
    )
    currency_differs = (
        asked.currency is not None
        and "currency" in charge
        and not (isinstance(currency, str) and currency.upper() == asked.currency.upper())
    )
    if amount_differs or currency_differs:
        shown_currency = _show(currency) if "currency" in charge else "?"
        parts.append(f"amount {_show(amount)} {shown_currency}, asked {asked.amount} {asked.currency}")
    other = False
    if "idempotency_key" in charge and charge["idempotency_key"] != asked.provider_key:
        parts.append(f"idempotency key {_show(charge['idempotency_key'])}, asked {asked.provider_key}")
        other = True
    reference = charge.get("reference")
    if asked.reference is not None and reference is not None and reference != asked.reference:
        parts.append(f"reference {_show(reference)}, asked {asked.reference}")
        other = True
    return "; ".join(parts)[:MISMATCH_MAX_LENGTH], other


def refund_mismatch_of(refund: dict[str, Any], asked: Asked) -> tuple[str, bool]:
    """What in an answer's refund differs from the request (its amount, or a charge other than
    a non-empty `asked.charge_id`), and whether it is another charge's refund."""
    parts: list[str] = []
    amount = refund.get("amount")
    if (
        asked.amount is not None
        and "amount" in refund
        and not (type(amount) is int and amount == asked.amount)
    ):
        parts.append(f"amount {_show(amount)}, asked {asked.amount}")
    other = bool(asked.charge_id) and "charge" in refund and refund["charge"] != asked.charge_id
    if other:
        parts.append(f"charge {_show(refund['charge'])}, asked {asked.charge_id}")
    return "; ".join(parts)[:MISMATCH_MAX_LENGTH], other


def _checked(result: ProviderResult, charge: dict[str, Any], asked: Asked) -> ProviderResult:
    refund = asked.kind in REFUND_KINDS
    mismatch, other = refund_mismatch_of(charge, asked) if refund else mismatch_of(charge, asked)
    if not mismatch:
        return result
    if asked.kind == REFUND_LOOKUP and other:
        # Another charge's refund: whether ours was made, this answer does not say.
        unknown = _unusable(result.http_status or 200, f"an answer for another charge's refund ({mismatch})")
        return dataclasses.replace(unknown, mismatch=mismatch)
    if asked.kind == LOOKUP and other:
        # Not our charge: whether ours was made, this answer does not say.
        unknown = _unusable(result.http_status or 200, f"an answer for another charge ({mismatch})")
        return dataclasses.replace(unknown, mismatch=mismatch)
    return dataclasses.replace(result, mismatch=mismatch)


def result_from_response(response: requests.Response, asked: Asked) -> ProviderResult:
    """Validate the answer at the boundary: anything we cannot trust is an unknown outcome."""
    http_status = response.status_code
    cause = cause_of_status(http_status)
    data = _json_object(response)
    error = data.get("error") if data and isinstance(data.get("error"), dict) else {}
    if http_status == 404:
        return _answer_to_404(response, error, kind=asked.kind)
    if cause == Cause.SUCCEEDED and data is not None and asked.kind in REFUND_KINDS:
        return _checked(_result_from_refund(http_status, data), data, asked)
    if cause == Cause.SUCCEEDED and data is not None:
        return _checked(_result_from_charge(http_status, data, error), data, asked)
    if cause == Cause.SUCCEEDED:
        return _unusable(http_status, f"HTTP {http_status} with a body that is not a JSON object")
    if cause == Cause.DECLINED:
        return _declined(http_status, error, charge_id="")
    if cause == Cause.REJECTED and error.get("type") == "idempotency_error":
        # The provider has this key with another body: the first request may have charged.
        return _unusable(http_status, f"HTTP {http_status}: the provider holds this key with another request")
    message = describe(cause, http_status)
    if cause == Cause.REJECTED:
        # The code is the provider's reason ("" if it gave none), as a decline's is: the API
        # answers provider_rejected and shows this as error.provider_code.
        provider_code = _safe_code(error.get("code") or error.get("type"))
        return ProviderResult(
            outcome=Outcome.REJECTED,
            http_status=http_status,
            code=provider_code,
            message=f"The provider refused the request ({provider_code or f'HTTP {http_status}'}).",
        )
    return ProviderResult(
        outcome=CAUSES[cause][0],
        http_status=http_status,
        code=cause.value,
        message=message,
        retry_after_s=parse_retry_after(response.headers.get("Retry-After")) or 0,
    )


def _result_from_charge(http_status: int, data: dict[str, Any], error: dict) -> ProviderResult:
    """A 2xx answer's charge: succeeded or declined, with a valid id; anything else unknown."""
    charge_id, charge_status = data.get("id"), data.get("status")
    if not isinstance(charge_id, str) or not CHARGE_ID_PATTERN.match(charge_id):
        return _unusable(http_status, f"HTTP {http_status} without a valid charge id")
    if charge_status == "declined":
        return _declined(http_status, error, charge_id=charge_id)
    if charge_status != "succeeded":
        return _unusable(http_status, f"HTTP {http_status} with an unexpected charge status")
    return ProviderResult(
        outcome=Outcome.SUCCEEDED, http_status=http_status, charge_id=charge_id, code=Cause.SUCCEEDED.value
    )


def _result_from_refund(http_status: int, data: dict[str, Any]) -> ProviderResult:
    """A 2xx answer's refund: a valid id, a known status and, when given, a valid charge id."""
    refund_id, refund_status, charge_id = data.get("id"), data.get("status"), data.get("charge", "")
    if not isinstance(refund_id, str) or not CHARGE_ID_PATTERN.match(refund_id):
        return _unusable(http_status, f"HTTP {http_status} without a valid refund id")
    if not isinstance(refund_status, str) or refund_status not in REFUND_STATUSES:
        return _unusable(http_status, f"HTTP {http_status} with an unexpected refund status")
    if "charge" in data and not (isinstance(charge_id, str) and CHARGE_ID_PATTERN.match(charge_id)):
        return _unusable(http_status, f"HTTP {http_status} with a refund for an unusable charge id")
    outcome, cause = REFUND_STATUSES[refund_status]
    code, message = cause.value, ""
    if outcome == Outcome.DECLINED:
        code = _safe_code(data.get("failure_reason")) or "refund_failed"
        message = f"The refund failed ({code})."
    return ProviderResult(
        outcome=outcome,
        http_status=http_status,
        refund_id=refund_id,
        charge_id=charge_id,
        code=code,
        message=message,
    )


_SAFE_CODE = re.compile(r"^[a-z0-9_]{1,64}$")


def _safe_code(value: object) -> str:
    """A provider's error code, only if it looks like one (it ends up in our API's answers)."""
    return value if isinstance(value, str) and _SAFE_CODE.match(value) else ""


def _declined(http_status: int, error: dict, *, charge_id: str) -> ProviderResult:
    code = _safe_code(error.get("decline_code")) or _safe_code(error.get("code")) or "card_declined"
    return ProviderResult(
        outcome=Outcome.DECLINED,
        http_status=http_status,
        charge_id=charge_id,
        code=code,
        message=f"The card was declined ({code}).",
    )
