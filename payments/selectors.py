"""Reads shared by the API, the admin, the commands and health."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from payments.models import Transaction


def transaction_for_key(*, client: AbstractBaseUser, idempotency_key: str) -> Transaction | None:
    return Transaction.objects.filter(client=client, idempotency_key=idempotency_key).first()


def transaction_get(*, transaction_id: uuid.UUID) -> Transaction:
    return Transaction.objects.get(pk=transaction_id)


def transactions_for_client(*, client: AbstractBaseUser, status: str | None = None) -> QuerySet[Transaction]:
    queryset = Transaction.objects.filter(client=client).order_by("-created_at", "-pk")
    if status:
        queryset = queryset.filter(status=status)
    return queryset
