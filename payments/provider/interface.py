"""The provider port: what one call to a payment provider established, in the service's words.

Every adapter (payments.provider.http is the one in use) returns these types, whatever the
provider's own protocol: the cause of each HTTP attempt, the outcome of the whole call, and
whether an attempt may have reached the provider. `payments.outcomes` turns them into answers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from payments.provider.resilience import Resilience


class Outcome(enum.StrEnum):
    """What one call (all its HTTP attempts) established. See `payments.outcomes`."""

    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    REJECTED = "rejected"  # 400/422: the provider refused the request itself; nothing charged
    UNKNOWN = "unknown"  # the provider may have charged: the cause is in `code`
    CONNECTION_ERROR = "provider_connection_error"  # nothing was sent
    PROVIDER_ERROR = "provider_error"  # the provider answered that it did not charge (5xx, 429)
    MISCONFIGURED = "provider_misconfigured"  # 401/403, or 404 on a charge: our key or URL is wrong
    UNAVAILABLE = "provider_unavailable"  # refused by the open breaker: nothing was sent
    # A lookup only, and only from the provider's typed answer (404 with the JSON error code
    # `resource_missing` from its lookup route): it has no charge with this key *yet*. Any other
    # 404, an HTML page or a redirect is UNKNOWN.
    NOT_FOUND = "not_found"
    # A refund only: the provider holds the refund, and its final status (succeeded or failed)
    # comes later, from a refund lookup. A definitive answer: the provider has the refund.
    PENDING = "pending"


class Cause(enum.StrEnum):
    """What one HTTP attempt saw. Stored in the attempt log and as the error code."""

    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    REJECTED = "rejected"
    TIMEOUT = "provider_timeout"  # sent, no answer within the read timeout
    DROPPED = "connection_dropped"  # the connection broke after the request may have been sent
    IN_FLIGHT = "request_in_flight"  # 409: an earlier attempt with this key is still being processed
    UNUSABLE = "unusable_answer"  # an answer that cannot be trusted (not JSON, bad id, odd status)
    CONNECTION_ERROR = "connection_error"  # refused, DNS, TLS handshake, connect timeout: not sent
    PROVIDER_ERROR = "provider_error"  # 5xx: the provider says it did not process the request
    RATE_LIMITED = "rate_limited"  # 429: not processed
    MISCONFIGURED = "provider_misconfigured"  # 401/403, or 404 on a charge
    NOT_FOUND = "not_found"  # a lookup's (or a refund's) typed 404 resource_missing
    PENDING = "pending"  # a refund the provider holds, its final status to come


# Cause of an attempt -> (the call's outcome if it was the last attempt, may it have charged?)
CAUSES: dict[Cause, tuple[Outcome, bool]] = {
    Cause.SUCCEEDED: (Outcome.SUCCEEDED, True),
    Cause.DECLINED: (Outcome.DECLINED, True),
    Cause.REJECTED: (Outcome.REJECTED, True),
    Cause.TIMEOUT: (Outcome.UNKNOWN, True),
    Cause.DROPPED: (Outcome.UNKNOWN, True),
    Cause.IN_FLIGHT: (Outcome.UNKNOWN, True),
    Cause.UNUSABLE: (Outcome.UNKNOWN, True),
    Cause.CONNECTION_ERROR: (Outcome.CONNECTION_ERROR, False),
    Cause.PROVIDER_ERROR: (Outcome.PROVIDER_ERROR, True),
    Cause.RATE_LIMITED: (Outcome.PROVIDER_ERROR, True),
    Cause.MISCONFIGURED: (Outcome.MISCONFIGURED, True),
    Cause.NOT_FOUND: (Outcome.NOT_FOUND, True),
    Cause.PENDING: (Outcome.PENDING, True),
}
# Attempts that say the provider is unwell: these, and only these, count towards opening the breaker.
BREAKER_FAILURES = frozenset(
    {Cause.TIMEOUT, Cause.DROPPED, Cause.UNUSABLE, Cause.CONNECTION_ERROR, Cause.PROVIDER_ERROR}
)
# Definitive answers: nothing later in the same call can make them unknown.
DEFINITIVE = frozenset(
    {Outcome.SUCCEEDED, Outcome.DECLINED, Outcome.REJECTED, Outcome.NOT_FOUND, Outcome.PENDING}
)


@dataclass(frozen=True)
class Attempt:
    started_at: datetime
    duration_ms: int
    http_status: int | None
    outcome: str  # a Cause
    message: str = ""

    @property
    def reached_provider(self) -> bool:
        """False only when the request can not have left this host (the connection never opened)."""
        return CAUSES[Cause(self.outcome)][1]


@dataclass(frozen=True)
class ProviderResult:
    outcome: Outcome
    attempts: tuple[Attempt, ...] = ()
    charge_id: str = ""
    http_status: int | None = None
    code: str = ""
    message: str = ""
    retry_after_s: int = 0
    # Set when an answer's charge does not match what was asked (another amount, currency,
    # idempotency key or reference), e.g. "amount 1 JPY, asked 1999 USD": a charge's answer is
    # still a fact to record, but a person must look at it. A lookup's answer for another key or
    # reference is UNKNOWN (with this set): it says nothing about our charge.
    mismatch: str = ""
    # A refund's answer: the provider's refund id (re_...); `charge_id` is then the charge it
    # refunds (the answer's "charge"), and `outcome` SUCCEEDED (refunded), DECLINED (the refund
    # failed), PENDING (held, final status later), NOT_FOUND (no such charge, or no such refund
    # on a refund lookup), or as for charges.
    refund_id: str = ""

    @property
    def charged(self) -> bool:
        return self.outcome == Outcome.SUCCEEDED

    @property
    def reached_provider(self) -> bool:
        return any(attempt.reached_provider for attempt in self.attempts)


_FIXED_MESSAGES = {
    Cause.TIMEOUT: "no answer within the read timeout",
    Cause.DROPPED: "the connection broke after the request may have been sent",
    Cause.CONNECTION_ERROR: "could not open a connection to the provider; nothing was sent",
}


def describe(cause: Cause, http_status: int | None = None) -> str:
    """A fixed message per cause: no host names, ports, URLs or exception text (those go to the log)."""
    if cause in _FIXED_MESSAGES:
        return _FIXED_MESSAGES[cause]
    return f"HTTP {http_status}" if http_status else cause.value.replace("_", " ")


class PaymentProvider(Protocol):
    """What the services need of a provider adapter (a second provider implements this)."""

    resilience: Resilience

    def attempt_deadline_s(self) -> float:
        """The hard wall-clock bound on one attempt: its connection is closed then, whatever the
        peer sends (an attempt cut there is UNKNOWN: the request was sent)."""
        ...

    def call_deadline_s(self) -> float:
        """The longest one `charge` or `lookup` (all its attempts) can keep a request open."""
        ...

    def charge(
        self, *, provider_key: str, amount: int, currency: str, source: str, reference: str, description: str
    ) -> ProviderResult: ...

    def lookup(
        self,
        *,
        provider_key: str,
        amount: int | None = None,
        currency: str | None = None,
        reference: str | None = None,
    ) -> ProviderResult:
        """The charge made with `provider_key`, checked against the fields given; NOT_FOUND
        only from the provider's own typed "no such charge"."""
        ...

    def refund(self, *, charge_key: str, refund_key: str, amount: int, charge_id: str = "") -> ProviderResult:
        """Refund `amount` of the charge made with idempotency key `charge_key`, under the refund's
        own idempotency key `refund_key`. SUCCEEDED, DECLINED (failed) or PENDING from the
        provider's refund; NOT_FOUND only from its typed "no such charge" (nothing refunded);
        REJECTED for a refund it refuses (more than is left, a charge not succeeded). `mismatch`
        is set when the refund answered is for another amount, or another charge than a
        non-empty `charge_id`."""
        ...

    def refund_lookup(
        self, *, charge_key: str, refund_key: str, amount: int | None = None, charge_id: str = ""
    ) -> ProviderResult:
        """The refund made with `refund_key` on the charge `charge_key`, checked against the
        amount and charge id given; NOT_FOUND only from the provider's typed "no such refund".
        One for another charge says nothing about ours and is UNKNOWN (with `mismatch`)."""
        ...
