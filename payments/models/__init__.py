from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models

from core.db import DatabaseNow
from core.logs.redaction import mask_source as mask_source  # the one masking rule, the logs' too
from core.logs.redaction import note_card_source
from payments.currencies import format_minor_units


def new_provider_key() -> str:
    return f"ps_{uuid.uuid4().hex}"


def new_refund_key() -> str:
    return f"rf_{uuid.uuid4().hex}"


class CardSourceField(models.CharField):
    """The full card source: every value written or read is noted for the log redaction.

    So the SQL of a query log (DB_LOG_QUERIES), and any later line of the same request or
    command, shows it masked whatever its shape (core.logs.redaction). Migrations see a plain
    CharField: the column is one.
    """

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        note_card_source(value)
        return super().get_db_prep_value(value, connection, prepared)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        note_card_source(value)
        return value

    def deconstruct(self) -> Any:
        name, _, args, kwargs = super().deconstruct()
        return name, "django.db.models.CharField", args, kwargs


class BinaryCharField(models.CharField):
    """A CharField compared byte for byte: MariaDB's default collation ignores case.

    Idempotency keys `order-Ab` and `order-aB` are two payments. SQLite already compares
    bytes (its BINARY collation), so only MySQL/MariaDB get an explicit collation.
    """

    def db_parameters(self, connection: Any) -> dict[str, Any]:
        params = super().db_parameters(connection)
        if connection.vendor == "mysql":
            params["collation"] = "utf8mb4_bin"
        return params


class Transaction(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"  # a request or command is working on it right now
        SUCCEEDED = "succeeded"
        DECLINED = "declined"
        FAILED = "failed"  # known not charged; retried at next_retry_at unless it needs review
        UNKNOWN = "unknown"  # the provider may have charged; reconcile_payments finds out
        CANCELED = "canceled"

    class ErrorType(models.TextChoices):
        CARD_ERROR = "card_error"
        PROVIDER_REJECTED = "provider_rejected"
        OUTCOME_UNKNOWN = "outcome_unknown"
        PROVIDER_ERROR = "provider_error"

    TERMINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.DECLINED, Status.CANCELED})
    # The moves between statuses, and who may make them: payments.transitions.TABLE.

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="transactions"
    )
    amount = models.PositiveBigIntegerField(help_text="In the currency's minor unit (1999 = 19.99 USD).")
    currency = models.CharField(max_length=3)
    source_masked = models.CharField(max_length=64)
    # The full token is kept only while the charge may still be sent again (a
    # failed transaction can be retried) and is erased once the outcome is final.
    source = CardSourceField(max_length=255, blank=True, editable=False)
    description = models.CharField(max_length=500, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error_type = models.CharField(max_length=32, choices=ErrorType.choices, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=500, blank=True)

    # NULL rather than "": the unique constraint must allow many charges without a key.
    idempotency_key = BinaryCharField(max_length=255, null=True, blank=True)
    request_fingerprint = models.CharField(max_length=64)
    provider_idempotency_key = models.CharField(max_length=64, unique=True, default=new_provider_key)
    provider_charge_id = models.CharField(max_length=64, blank=True)

    attempts = models.PositiveIntegerField(
        default=0, help_text="Charge tries; each may make several HTTP attempts (see the attempt log)."
    )
    next_retry_at = models.DateTimeField(null=True, blank=True)
    # When the latest charge call began: until it + PAYMENT_RECONCILE_AFTER_S an attempt may
    # still be in flight, so a lookup that finds nothing proves nothing.
    charge_started_at = models.DateTimeField(null=True, blank=True, db_default=DatabaseNow())
    # The claim that owns the row while it is pending: every write that settles or puts back a
    # claimed row compares it (a fence), so a claim that lost its row writes nothing.
    claim_token = models.CharField(max_length=32, blank=True, editable=False)
    # When the current claim was taken, by the database's clock (never a host's): a pending row
    # older than the reconcile window was abandoned by its process.
    claimed_at = models.DateTimeField(null=True, blank=True, editable=False, db_default=DatabaseNow())
    # Non-empty: a person must decide (tries ran out, or a command hit an error on it).
    review_reason = models.CharField(max_length=200, blank=True)
    # The X-Request-ID of the last API request that sent or settled it: the logs' detail for
    # it is under this id (and under transaction_id, which commands' lines carry too).
    last_request_id = models.CharField(max_length=128, blank=True)
    status_note = models.CharField(max_length=500, blank=True)
    # A provider event about it that could not be placed (another amount, say) asked for a
    # lookup: an unknown row is then due for reconcile_payments at once, window or not.
    lookup_requested_at = models.DateTimeField(null=True, blank=True, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("retry_transaction", "Can retry and reconcile failed transactions"),
            ("cancel_transaction", "Can cancel failed transactions"),
            ("refund_transaction", "Can refund succeeded transactions"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "idempotency_key"], name="unique_client_idempotency_key"
            ),
        ]
        indexes = [
            models.Index(fields=["client", "-created_at"], name="txn_client_created"),
            models.Index(fields=["client", "status", "-created_at"], name="txn_client_status"),
            models.Index(fields=["status", "next_retry_at"], name="txn_status_next_retry"),
            models.Index(fields=["status", "updated_at"], name="txn_status_updated"),
            models.Index(fields=["provider_charge_id"], name="txn_provider_charge"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.amount_display} {self.status}"

    @property
    def amount_display(self) -> str:
        return format_minor_units(self.amount, self.currency)

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL_STATUSES

    @property
    def needs_review(self) -> bool:
        return bool(self.review_reason) and not self.is_terminal


class Refund(models.Model):
    """Money given back for a succeeded charge: one refund request, sent once under its own key.

    Under the charge's row lock, succeeded, pending and unknown refunds never add up to more
    than the charge (payments.services.refunds); the moves between statuses are
    payments.transitions.REFUND_TABLE.
    """

    class Status(models.TextChoices):
        # Being sent right now (claim_token set), or held by the provider (no claim, the
        # provider's id known): its final status comes later.
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # not refunded: refused by the provider, or it could not take it
        UNKNOWN = "unknown"  # may have been refunded; reconcile_refunds finds out
        CANCELED = "canceled"  # not refunded and given up on: never sent again

    class ErrorType(models.TextChoices):
        REFUND_FAILED = "refund_failed"  # the provider refused the refund: final
        PROVIDER_ERROR = "provider_error"  # not refunded; the same request may be sent again
        OUTCOME_UNKNOWN = "outcome_unknown"

    class Reason(models.TextChoices):
        REQUESTED_BY_CUSTOMER = "requested_by_customer"
        DUPLICATE = "duplicate"
        FRAUDULENT = "fraudulent"
        CHARGED_AFTER_CANCEL = "charged_after_cancel"
        OTHER = "other"

    COUNTED_STATUSES = frozenset({Status.PENDING, Status.SUCCEEDED, Status.UNKNOWN})

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, related_name="refunds")
    client = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="refunds")
    amount = models.PositiveBigIntegerField(help_text="In the charge's currency's minor unit.")
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=32, choices=Reason.choices)
    note = models.CharField(max_length=500, blank=True)
    requested_by = models.CharField(max_length=200, help_text="Who asked: an API client or a support user.")

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error_type = models.CharField(max_length=32, choices=ErrorType.choices, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=500, blank=True)

    idempotency_key = BinaryCharField(max_length=255, null=True, blank=True)
    request_fingerprint = models.CharField(max_length=64)
    provider_idempotency_key = models.CharField(max_length=64, unique=True, default=new_refund_key)
    provider_refund_id = models.CharField(max_length=64, blank=True)

    attempts = models.PositiveIntegerField(
        default=0, help_text="Refund calls; each may make several HTTP attempts."
    )
    # When the latest refund call began (the database's clock): a lookup that finds nothing
    # proves nothing until PAYMENT_RECONCILE_AFTER_S after it.
    refund_started_at = models.DateTimeField(null=True, blank=True, db_default=DatabaseNow())
    claim_token = models.CharField(max_length=32, blank=True, editable=False)
    claimed_at = models.DateTimeField(null=True, blank=True, editable=False, db_default=DatabaseNow())
    review_reason = models.CharField(max_length=200, blank=True)
    last_request_id = models.CharField(max_length=128, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "idempotency_key"], name="unique_refund_idempotency_key"
            ),
        ]
        indexes = [models.Index(fields=["status", "updated_at"], name="refund_status_updated")]

    def __str__(self) -> str:
        return f"refund {self.id} {self.amount_display} {self.status}"

    @property
    def amount_display(self) -> str:
        return format_minor_units(self.amount, self.currency)

    @property
    def held_by_provider(self) -> bool:
        """Pending with no claim: the provider answered "pending" and settles it later."""
        return self.status == self.Status.PENDING and not self.claim_token


class PaymentAttempt(models.Model):
    """One HTTP attempt to the provider: an append-only audit trail."""

    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, related_name="attempt_log")
    # Set for a refund's attempts (kind refund or refund_lookup), numbered with the charge's.
    refund = models.ForeignKey(
        Refund, on_delete=models.PROTECT, null=True, blank=True, related_name="attempt_log"
    )
    number = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, default="charge")  # charge, lookup, refund or refund_lookup
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=32)  # a payments.provider.Cause
    reached_provider = models.BooleanField(
        default=True, help_text="False when no connection could be opened: nothing was sent."
    )
    message = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["transaction", "number"]
        constraints = [
            models.UniqueConstraint(fields=["transaction", "number"], name="unique_attempt_number"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} attempt {self.number}: {self.outcome}"


class ProviderEvent(models.Model):
    """One event the provider sent to POST /webhooks/provider, verified, stored once.

    `webhook_id` (the Standard Webhooks `webhook-id`) is unique: the event is inserted in the
    same database transaction as its effect, so a duplicate finds it and changes nothing
    (payments.services.provider_events).
    """

    class Effect(models.TextChoices):
        APPLIED = "applied"  # it settled the charge or refund
        UNCHANGED = "unchanged"  # already so, or a final state it may not move: nothing changed
        LOOKUP = "lookup"  # it could not be placed on its row: the row was marked for a lookup
        UNPLACED = "unplaced"  # no row of ours, or an event it cannot read: only logged

    webhook_id = BinaryCharField(max_length=255, unique=True)
    type = models.CharField(max_length=64)
    # The webhook-timestamp header: when the provider says it sent it.
    sent_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    payload = models.JSONField(default=dict, blank=True)
    effect = models.CharField(max_length=16, choices=Effect.choices)
    detail = models.CharField(max_length=500, blank=True)
    transaction = models.ForeignKey(
        Transaction, on_delete=models.PROTECT, null=True, blank=True, related_name="provider_events"
    )
    refund = models.ForeignKey(
        Refund, on_delete=models.PROTECT, null=True, blank=True, related_name="provider_events"
    )

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.type} {self.webhook_id}: {self.effect}"


# Events out (their own module, for size); imported here so that Django registers them.
from payments.models.client_events import (  # noqa: E402
    ClientEvent as ClientEvent,
)
from payments.models.client_events import (  # noqa: E402
    DeliveryAttempt as DeliveryAttempt,
)
from payments.models.client_events import (  # noqa: E402
    EventDelivery as EventDelivery,
)
from payments.models.client_events import (  # noqa: E402
    WebhookEndpoint as WebhookEndpoint,
)
