"""What the key commands share: the options that describe a new key, and printing it once."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

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


def new_key_expiry(key_name: str, expires_in_days: int | None) -> datetime | None:
    """Checks the new key's options (before anything is written) and returns its expiry time."""
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
        raise CommandError(
            f"--expires-in-days={expires_in_days} is invalid: expected 1 to {MAX_EXPIRY_DAYS}."
        )
    if not key_name or len(key_name) > 50:
        raise CommandError(f"--key-name={key_name!r} is invalid: expected 1 to 50 characters.")
    return timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None


def issue_and_print(command: BaseCommand, user: Any, key_name: str, expires_at: datetime | None) -> APIKey:
    """Create a key and print it alone on stdout (for `key=$(manage.py …)`); the rest goes to stderr."""
    api_key, key = APIKey.objects.issue(user, key_name, expires_at)
    expiry = f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
    command.stderr.write(
        f"New API key {api_key.prefix}… {key_name!r} for {user.get_username()!r}{expiry}. "
        "It is shown once: store it now."
    )
    command.stdout.write(key)
    return api_key
