"""The fake provider's protocol: its paths, test cards, faults and the answers it gives.

Standard library only; see the package's docstring."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

CHARGES_PATH = "/v1/charges"
HEALTH_PATH = "/health"
FAKE_CHARGES_PATH = "/_fake/charges"
FAKE_RESET_PATH = "/_fake/reset"
FAKE_LEDGER_PATH = "/_fake/ledger"
FAKE_FAULTS_PATH = "/_fake/faults"
FAKE_FAULTS_CLEAR_PATH = "/_fake/faults/clear"
FAKE_REFUNDS_PATH = "/_fake/refunds"
FAKE_REFUNDS_SETTLE_PATH = "/_fake/refunds/settle"

MAX_BODY_BYTES = 1_000_000
MAX_IDEMPOTENCY_KEY_LENGTH = 255
FLAKY_FAILURES_PER_KEY = 2
RATE_LIMITED_FAILURES_PER_KEY = 1
RATE_LIMIT_RETRY_AFTER_S = 1
FINAL_STATUSES = frozenset({200, 402})

CHARGE_FIELDS = frozenset({"amount", "currency", "source", "reference", "description"})
DECLINES: dict[str, tuple[str, str]] = {
    "tok_chargeDeclined": ("generic_decline", "Your card was declined."),
    "tok_insufficientFunds": ("insufficient_funds", "Your card has insufficient funds."),
}

FAULT_KINDS_BY_TARGET: dict[str, frozenset[str]] = {
    "charge": frozenset(
        {"hold", "slow", "drop_after", "drop_before", "status", "garbage", "trickle"}
        | {"proxy_404", "redirect", "delayed_commit", "other_charge"}
    ),
    "lookup": frozenset(
        {"hold", "drop_before", "status", "garbage", "trickle", "proxy_404", "redirect", "other_charge"}
    ),
    # Keyed by the refund's own idempotency key.
    "refund": frozenset(
        {"hold", "slow", "drop_after", "drop_before", "status", "garbage", "trickle"}
        | {"proxy_404", "redirect", "delayed_commit", "other_refund", "refund_pending", "refund_failed"}
    ),
    "refund_lookup": frozenset(
        {"hold", "drop_before", "status", "garbage", "trickle", "proxy_404", "redirect", "other_refund"}
    ),
    # The events it sends (fakeprovider/events.py), keyed by the charge's or refund's key.
    "event": frozenset({"duplicate", "delay", "reorder", "bad_signature", "stale"}),
}
# Faults that answer nothing themselves: they change what the request does, and it goes on under
# the next matching fault, if any.
MODIFIER_KINDS = frozenset({"delayed_commit", "refund_pending", "refund_failed"})
# kind: (required parameters, optional parameters)
FAULT_PARAMETERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "hold": (frozenset({"ms"}), frozenset()),
    "slow": (frozenset({"ms"}), frozenset()),
    "drop_after": (frozenset(), frozenset()),
    "drop_before": (frozenset(), frozenset()),
    "status": (frozenset({"status"}), frozenset({"retry_after"})),
    "garbage": (frozenset({"variant"}), frozenset()),
    "trickle": (frozenset({"ms"}), frozenset()),
    "proxy_404": (frozenset(), frozenset()),
    "redirect": (frozenset(), frozenset({"location"})),
    "delayed_commit": (frozenset({"ms"}), frozenset()),
    "other_charge": (frozenset(), frozenset({"variant"})),
    "other_refund": (frozenset(), frozenset({"variant"})),
    "refund_pending": (frozenset({"ms"}), frozenset({"variant"})),
    "refund_failed": (frozenset(), frozenset()),
    "duplicate": (frozenset(), frozenset()),
    "delay": (frozenset({"ms"}), frozenset()),
    "reorder": (frozenset(), frozenset()),
    "bad_signature": (frozenset(), frozenset()),
    "stale": (frozenset(), frozenset()),
}
FAULT_PARAMETER_NAMES = ("ms", "status", "retry_after", "variant", "location")
STRING_PARAMETERS = frozenset({"variant", "location"})
# Where a redirect points by default: this host, a lookup of a key never charged, so a client
# that follows it is told "no such charge".
REDIRECT_LOCATION = f"{CHARGES_PATH}/moved-elsewhere"
# What a proxy (nginx) answers for a path it has no route for.
PROXY_404_PAGE = (
    b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    b"<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
FAULT_FIELDS = frozenset({"kind", "on", "key", *FAULT_PARAMETER_NAMES})
GARBAGE_VARIANTS = frozenset(
    {"not_json", "long_id", "bad_id", "bad_status", "missing_id", "deep_json", "not_object"}
)
# What an other_charge answer changes: amount (to 1), currency (to JPY), key (another idempotency
# key and reference), or all of them.
OTHER_CHARGE_VARIANTS = frozenset({"amount", "currency", "key", "all"})
# What an other_refund answer changes: amount (to 1), charge (another charge's id), or both.
OTHER_REFUND_VARIANTS = frozenset({"amount", "charge", "all"})
# What a pending refund settles as once its `ms` have passed.
REFUND_SETTLED_STATUSES = frozenset({"succeeded", "failed"})
VARIANTS_BY_KIND = {
    "garbage": GARBAGE_VARIANTS,
    "other_charge": OTHER_CHARGE_VARIANTS,
    "other_refund": OTHER_REFUND_VARIANTS,
    "refund_pending": REFUND_SETTLED_STATUSES,
}
LONG_ID_LENGTH = 300
DEEP_JSON_DEPTH = 50_000

JsonObject = dict[str, Any]
# (kind, on, idempotency key of the request it applied to)
AppliedFault = tuple[str, str, str | None]

# Error bodies by status: (type, code, message). Injected statuses use these too.
STATUS_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "invalid_request", "The request was invalid."),
    404: ("invalid_request_error", "resource_missing", "No charge was made with this idempotency key."),
    409: (
        "idempotency_error",
        "request_in_progress",
        "A request with this idempotency key is still being processed.",
    ),
    429: ("rate_limit_error", "rate_limited", "Too many requests."),
    500: ("api_error", "internal_error", "An internal error occurred."),
    502: ("api_error", "bad_gateway", "The upstream gateway failed."),
    503: ("api_error", "service_unavailable", "The service is temporarily unavailable."),
    504: ("api_error", "gateway_timeout", "The upstream gateway timed out."),
}


@dataclass(frozen=True)
class _Response:
    status: int
    # bytes go out as they are: garbage answers are not always JSON, or not encodable by json.
    body: JsonObject | list[Any] | bytes
    headers: tuple[tuple[str, str], ...] = ()
    # > 0: the whole answer (status line, headers, body) goes out one byte every this many ms.
    trickle_ms: int = 0
    content_type: str = "application/json"


@dataclass(frozen=True)
class Fault:
    """One injected fault; see the module docstring for the kinds and their parameters."""

    kind: str
    on: str = "charge"
    key: str | None = None
    ms: int | None = None
    status: int | None = None
    # Seconds, or any header value as it is (a client's parsing is tested with junk like "²").
    retry_after: int | str | None = None
    variant: str | None = None
    location: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS_BY_TARGET.get(self.on, ()):
            raise _InvalidRequestError(f"No fault {self.kind!r} on {self.on!r}; see the docstring.")
        required, optional = FAULT_PARAMETERS[self.kind]
        given = {name for name in FAULT_PARAMETER_NAMES if getattr(self, name) is not None}
        if required - given:
            raise _InvalidRequestError(f"Fault {self.kind!r} needs {sorted(required - given)}.")
        if given - required - optional:
            raise _InvalidRequestError(f"Fault {self.kind!r} takes no {sorted(given - required)}.")
        if isinstance(self.retry_after, str) and not _header_value(self.retry_after):
            raise _InvalidRequestError("Fault 'retry_after' must be an integer or a Latin-1 header value.")
        for name in (
            given - STRING_PARAMETERS - ({"retry_after"} if isinstance(self.retry_after, str) else set())
        ):
            if type(getattr(self, name)) is not int or getattr(self, name) < 0:
                raise _InvalidRequestError(f"Fault {name!r} must be a non-negative integer.")
        if self.status is not None and not 400 <= self.status <= 599:
            raise _InvalidRequestError("Fault 'status' must be an error status, 400 to 599.")
        if self.location is not None and not (isinstance(self.location, str) and self.location):
            raise _InvalidRequestError("Fault 'location' must be a non-empty string.")
        if self.variant is not None and self.variant not in VARIANTS_BY_KIND.get(self.kind, ()):
            raise _InvalidRequestError(f"Unknown {self.kind} variant {self.variant!r}.")
        if self.key is not None and not (isinstance(self.key, str) and self.key):
            raise _InvalidRequestError("Fault 'key' must be a non-empty string.")

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> Fault:
        if not isinstance(fields, Mapping):
            raise _InvalidRequestError("A fault must be a JSON object.")
        unknown = sorted(set(fields) - FAULT_FIELDS)
        if unknown:
            raise _InvalidRequestError(f"Unknown fault field(s): {', '.join(unknown)}.")
        if "kind" not in fields:
            raise _InvalidRequestError("A fault needs a 'kind'.")
        return cls(**fields)

    def to_dict(self) -> JsonObject:
        return {name: value for name, value in asdict(self).items() if value is not None}

    def matches(self, on: str, key: str | None) -> bool:
        return self.on == on and (self.key is None or self.key == key)


@dataclass(frozen=True)
class _ChargeRequest:
    amount: int
    currency: str
    source: str
    reference: str | None
    description: str | None
    fingerprint: str


@dataclass
class _KeyState:
    request: _ChargeRequest
    first_attempt_at: float
    attempts: int = 0
    in_progress: bool = False
    # A delayed_commit fault: lookups do not see the charge before this (time.monotonic()).
    visible_at: float = 0.0
    # When the charge was committed, by the wall clock (time.time()): made, and seen by lookups.
    committed_at: float | None = None
    result: _Response | None = None
    charge: JsonObject | None = None

    @property
    def charged(self) -> bool:
        return self.result is not None and self.result.status == 200


class _InvalidRequestError(ValueError):
    pass


def _error(status: int, error_type: str, message: str, **fields: str) -> _Response:
    return _Response(status, {"error": {"type": error_type, **fields, "message": message}})


def _header_value(value: str) -> bool:
    """Whether a string can go out as one header value (Latin-1, no line break)."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return bool(value) and "\r" not in value and "\n" not in value


def _status_error(status: int, retry_after: int | str | None = None) -> _Response:
    """The contract-shaped error answer for a status, with Retry-After if one is given."""
    if status == 401:
        return _unauthorized()
    fallback = ("invalid_request_error", "invalid_request", "The request was invalid.")
    if status >= 500:
        fallback = ("api_error", "internal_error", "An internal error occurred.")
    error_type, code, message = STATUS_ERRORS.get(status, fallback)
    response = _error(status, error_type, message, code=code)
    if retry_after is None:
        return response
    return _Response(status, response.body, (("Retry-After", str(retry_after)),))


def _garbage(variant: str, charge: JsonObject) -> _Response:
    """A 200 answer whose body a client cannot use, built from the charge it stands for."""
    if variant == "not_json":
        return _Response(200, b"<html>oops")
    if variant == "deep_json":
        return _Response(200, b"[" * DEEP_JSON_DEPTH + b"]" * DEEP_JSON_DEPTH)
    if variant == "not_object":
        return _Response(200, [charge])
    if variant == "missing_id":
        return _Response(200, {name: value for name, value in charge.items() if name != "id"})
    changed = {
        "long_id": {"id": str(charge.get("id") or "ch_").ljust(LONG_ID_LENGTH, "x")},
        "bad_id": {"id": "ch_ bad\u00e9"},
        "bad_status": {"status": "weird"},
    }[variant]
    return _Response(200, {**charge, **changed})


def _proxy_404() -> _Response:
    return _Response(404, PROXY_404_PAGE, content_type="text/html")


def _redirect(location: str) -> _Response:
    body = f'<html><body>Moved to <a href="{location}">{location}</a></body></html>'.encode()
    return _Response(302, body, (("Location", location),), content_type="text/html")


def _other_charge(variant: str, charge: JsonObject | None) -> _Response:
    """A 200 `succeeded` answer for another charge than the one asked for."""
    base: JsonObject = dict(charge) if charge else {"id": f"ch_{secrets.token_hex(12)}", "amount": 1999}
    base.update(status="succeeded")
    base.pop("error", None)
    if variant in ("amount", "all"):
        base["amount"] = 1
    if variant in ("currency", "all"):
        base["currency"] = "USD" if str(base.get("currency", "")).upper() == "JPY" else "JPY"
    if variant in ("key", "all"):
        base.update(idempotency_key=f"another-{secrets.token_hex(6)}", reference="another-charge")
    return _Response(200, base)


def _unauthorized() -> _Response:
    body = _error(401, "authentication_error", "Invalid API key provided.").body
    return _Response(401, body, (("WWW-Authenticate", "Bearer"),))


def _invalid_request(message: str, status: int = 400, **fields: str) -> _Response:
    return _error(status, "invalid_request_error", message, **fields)


def _parse_json_object(raw_body: bytes) -> JsonObject:
    try:
        body = json.loads(raw_body)
    except (ValueError, RecursionError):
        raise _InvalidRequestError("Request body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise _InvalidRequestError("Request body must be a JSON object.")
    return body


def _parse_charge_request(raw_body: bytes) -> _ChargeRequest:
    body = _parse_json_object(raw_body)
    # Unknown fields are rejected so that a client drifting from the contract fails loudly here.
    unknown = sorted(set(body) - CHARGE_FIELDS)
    if unknown:
        raise _InvalidRequestError(f"Unknown parameter(s): {', '.join(unknown)}.")

    amount = body.get("amount")
    if type(amount) is not int or amount <= 0:
        raise _InvalidRequestError("amount must be a positive integer (minor units).")
    currency = body.get("currency")
    if not (isinstance(currency, str) and len(currency) == 3):
        raise _InvalidRequestError("currency must be a three-letter ISO code.")
    if not (currency.isascii() and currency.isalpha()):
        raise _InvalidRequestError("currency must be a three-letter ISO code.")
    source = body.get("source")
    if not (isinstance(source, str) and source.startswith("tok_") and len(source) > 4):
        raise _InvalidRequestError("source must be a token starting with 'tok_'.")
    for optional in ("reference", "description"):
        if body.get(optional) is not None and not isinstance(body[optional], str):
            raise _InvalidRequestError(f"{optional} must be a string.")

    return _ChargeRequest(
        amount=amount,
        currency=currency,
        source=source,
        reference=body.get("reference"),
        description=body.get("description"),
        fingerprint=json.dumps(body, sort_keys=True, separators=(",", ":")),
    )


def _decide(request: _ChargeRequest, attempt: int, key: str) -> tuple[_Response, JsonObject | None]:
    """The answer to one processing attempt, and the charge record if a charge was made."""
    source = request.source
    if source == "tok_error":
        return _status_error(500), None
    if source == "tok_flaky" and attempt <= FLAKY_FAILURES_PER_KEY:
        return _status_error(503), None
    if source == "tok_rateLimited" and attempt <= RATE_LIMITED_FAILURES_PER_KEY:
        return _status_error(429, RATE_LIMIT_RETRY_AFTER_S), None

    charge: JsonObject = {
        "id": f"ch_{secrets.token_hex(12)}",
        "status": "succeeded",
        "amount": request.amount,
        "currency": request.currency,
        "reference": request.reference,
        "idempotency_key": key,
        "created": int(time.time()),
    }
    if source in DECLINES:
        code, message = DECLINES[source]
        declined = _error(402, "card_error", message, code="card_declined", decline_code=code)
        charge.update(status="declined", error=declined.body["error"])
        return declined, charge
    return _Response(200, charge), charge
