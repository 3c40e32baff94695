from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from payments.currencies import format_minor_units


def new_provider_key() -> str:
    return f"ps_{uuid.uuid4().hex}"


def mask_source(source: str) -> str:
    """Keep the prefix and the last four characters: tok_visa -> tok_…visa."""
    prefix, _, rest = source.partition("_")
    if not rest:
        return "…" + source[-4:]
    return f"{prefix}_…{rest[-4:]}"


class Transaction(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        DECLINED = "declined"
        FAILED = "failed"
        CANCELED = "canceled"

    class ErrorType(models.TextChoices):
        CARD_ERROR = "card_error"
        PROVIDER_TIMEOUT = "provider_timeout"
        PROVIDER_CONNECTION_ERROR = "provider_connection_error"
        PROVIDER_ERROR = "provider_error"
        PROVIDER_UNAVAILABLE = "provider_unavailable"

    TERMINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.DECLINED, Status.CANCELED})
    # The one table of allowed moves. A definitive answer from the provider
    # (succeeded, declined) may settle a pending or failed row.
    TRANSITIONS = {
        Status.PENDING: frozenset({Status.SUCCEEDED, Status.DECLINED, Status.FAILED}),
        Status.FAILED: frozenset(
            {Status.PENDING, Status.SUCCEEDED, Status.DECLINED, Status.FAILED, Status.CANCELED}
        ),
    }

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="transactions"
    )
    amount = models.PositiveBigIntegerField(help_text="In the currency's minor unit (1999 = 19.99 USD).")
    currency = models.CharField(max_length=3)
    source_masked = models.CharField(max_length=64)
    # The full token is kept only while the charge may still be sent again (a
    # failed transaction can be retried) and is erased once the outcome is final.
    source = models.CharField(max_length=255, blank=True, editable=False)
    description = models.CharField(max_length=500, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error_type = models.CharField(max_length=32, choices=ErrorType.choices, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=500, blank=True)

    # NULL rather than "": the unique constraint must allow many charges without a key.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    request_fingerprint = models.CharField(max_length=64)
    provider_idempotency_key = models.CharField(max_length=64, unique=True, default=new_provider_key)
    provider_charge_id = models.CharField(max_length=64, blank=True)

    attempts = models.PositiveIntegerField(default=0, help_text="Charge tries that reached the provider.")
    next_retry_at = models.DateTimeField(null=True, blank=True)
    status_note = models.CharField(max_length=500, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("retry_transaction", "Can retry and reconcile failed transactions"),
            ("cancel_transaction", "Can cancel failed transactions"),
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

    def can_move_to(self, status: str) -> bool:
        return status in self.TRANSITIONS.get(self.status, frozenset())

    @property
    def needs_review(self) -> bool:
        return self.status == self.Status.FAILED and self.next_retry_at is None


class PaymentAttempt(models.Model):
    """One HTTP attempt to the provider: an append-only audit trail."""

    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, related_name="attempt_log")
    number = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, default="charge")  # charge or lookup
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=32)
    message = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["transaction", "number"]
        constraints = [
            models.UniqueConstraint(fields=["transaction", "number"], name="unique_attempt_number"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.transaction_id}: {self.outcome}"
