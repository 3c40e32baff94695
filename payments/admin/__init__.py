"""The support staff's admin: the transaction list and page (transaction), their state banners
and actions (banners), the needs-attention filters (filters), the cancel and refund forms
(forms, refunds), the provider's events as received (provider_events, read-only), and events
out: endpoints, the outbox and deliveries with a replay action (webhooks).
Entry point only: every action goes through payments.services."""

from payments.admin.provider_events import ProviderEventAdmin
from payments.admin.transaction import TransactionAdmin
from payments.admin.webhooks import ClientEventAdmin, EventDeliveryAdmin, WebhookEndpointAdmin

__all__ = [
    "ClientEventAdmin",
    "EventDeliveryAdmin",
    "ProviderEventAdmin",
    "TransactionAdmin",
    "WebhookEndpointAdmin",
]
