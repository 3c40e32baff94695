"""The roles people have in the service, and what each may do."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone

from apikeys.models import APIKey

SUPPORT_GROUP_NAME = "Payment support"
SUPPORT_PERMISSIONS = (
    "view_transaction",
    "view_paymentattempt",
    "retry_transaction",
    "cancel_transaction",
    "view_refund",
    "refund_transaction",  # refunds from the transaction's page (granted by create_support_user)
    "view_providerevent",  # what the provider's events said and did
    "view_webhookendpoint",
    "view_clientevent",
    "view_eventdelivery",
    "replay_delivery",  # events out: send a delivery's event again
)


def can_take_payments(user: AbstractBaseUser) -> bool:
    """Staff and support accounts take payments only with a working API key of their own."""
    is_staff_account = user.is_staff or user.groups.filter(name=SUPPORT_GROUP_NAME).exists()
    if not is_staff_account:
        return True
    working_keys = APIKey.objects.filter(user=user, revoked=False).exclude(expiry_date__lte=timezone.now())
    return working_keys.exists()
