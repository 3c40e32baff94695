"""What the key commands share: the options that describe a new key, and printing it once."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from apikeys import models
from apikeys.models import APIKey

MAX_EXPIRY_DAYS = 3650


def add_new_key_arguments(parser: CommandParser, default_name: str) -> None:
    parser.add_argument(
        "--key-name", default=default_name, help=f"Name of the new key (default {default_name!r})."
    )
    parser.add_argument(
        "--expires-in-days",
        type=int,
        default=None,
        metavar="DAYS",
        help="The key stops working after DAYS days.",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="Revoke the client's active key of the same name, if any (one active key per name).",
    )


def new_key_expiry(key_name: str, expires_in_days: int | None) -> datetime | None:
    """Checks the new key's options (before anything is written) and returns its expiry time."""
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
        raise CommandError(
            f"--expires-in-days={expires_in_days} is invalid: expected 1 to {MAX_EXPIRY_DAYS}."
        )
    if not key_name or len(key_name) > 50:
        raise CommandError(f"--key-name={key_name!r} is invalid: expected 1 to 50 characters.")
    return timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None


def active_keys_named(user: Any, key_name: str, *, replace: bool) -> list[APIKey]:
    """The client's active keys of this name; refused (one line) when there is one and not `replace`."""
    same_name = models.active_keys_named(user, key_name)
    if same_name and not replace:
        raise CommandError(
            f"API client {user.get_username()!r} already has an active key named {key_name!r} "
            f"({same_name[0].prefix}…): add --replace to revoke it and issue a new one, or choose "
            "another --key-name."
        )
    return same_name


def issue_and_print(
    command: BaseCommand, user: Any, key_name: str, expires_at: datetime | None, *, replace: bool = False
) -> APIKey:
    """Create a key and print it alone on stdout (for `key=$(manage.py …)`); the rest goes to stderr.

    A client holds at most one active key of a name: another one is refused unless `replace`,
    which revokes it in the same transaction (the client's row is locked, so two runs at once
    cannot both add one).
    """
    with transaction.atomic():
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        same_name = active_keys_named(user, key_name, replace=replace)
        for old in same_name:
            old.revoke()
            command.stderr.write(f"Revoked API key {old.prefix}… {key_name!r}.")
        api_key, key = APIKey.objects.issue(user, key_name, expires_at)
    expiry = f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
    command.stderr.write(
        f"New API key {api_key.prefix}… {key_name!r} for {user.get_username()!r}{expiry}. "
        "It is shown once: store it now."
    )
    command.stdout.write(key)
    return api_key
