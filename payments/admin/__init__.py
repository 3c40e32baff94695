"""The support staff's admin: the transaction list and page (transaction), their state banners
and actions (banners), the needs-attention filters (filters), the cancel and refund forms
(forms, refunds), and the provider's events as received (provider_events, read-only).
Entry point only: every action goes through payments.services."""

from payments.admin.provider_events import ProviderEventAdmin
from payments.admin.transaction import TransactionAdmin

__all__ = ["ProviderEventAdmin", "TransactionAdmin"]
