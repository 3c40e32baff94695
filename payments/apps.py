from __future__ import annotations

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # An event's object is the charge or refund as the API shows it: the services, which may
        # not import the API, write events through these (payments.services.client_events).
        from payments.api.refund_serializers import RefundSerializer
        from payments.api.serializers import TransactionSerializer
        from payments.services import client_events

        client_events.register_renderer("charge", lambda txn: TransactionSerializer(txn).data)
        client_events.register_renderer("refund", lambda refund: RefundSerializer(refund).data)
