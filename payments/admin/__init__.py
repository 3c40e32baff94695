"""The support staff's admin: the transaction list and page (transaction), their state banners
and actions (banners), the needs-attention filters (filters) and the cancel form (forms).
Entry point only: every action goes through payments.services."""

from payments.admin.transaction import TransactionAdmin

__all__ = ["TransactionAdmin"]
