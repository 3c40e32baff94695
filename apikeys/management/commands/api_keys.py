"""List, create and revoke a client's API keys.

manage.py api_keys list CLIENT
manage.py api_keys create CLIENT [--key-name NAME] [--expires-in-days DAYS] [--replace]  # printed once
manage.py api_keys revoke PREFIX [--client CLIENT]
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apikeys.cli import add_new_key_arguments, issue_and_print, new_key_expiry
from apikeys.models import APIKey


def _client(username: str) -> Any:
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"No API client {username!r}; create it with create_api_client.") from None


def _when(moment: Any) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "-"


class Command(BaseCommand):
    help = "List, create and revoke a client's API keys."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        listing = actions.add_parser("list", help="The client's keys: prefix, name, state, dates.")
        listing.add_argument("client")
        create = actions.add_parser("create", help="A new key for the client, printed once on stdout.")
        create.add_argument("client")
        add_new_key_arguments(create, default_name="default")
        revoke = actions.add_parser("revoke", help="Revoke the key with this prefix.")
        revoke.add_argument("prefix")
        revoke.add_argument("--client", help="Needed when the prefix names keys of several clients.")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        getattr(self, f"handle_{action}")(**options)

    def handle_list(self, *, client: str, **options: Any) -> None:
        keys = APIKey.objects.filter(user=_client(client))
        self.stdout.write(
            f"{'prefix':<9} {'state':<8} {'created':<16}  {'last used':<16}  {'expires':<16}  name"
        )
        for key in keys:
            self.stdout.write(
                f"{key.prefix:<9} {key.state:<8} {_when(key.created):<16}  {_when(key.last_used_at):<16}  "
                f"{_when(key.expiry_date):<16}  {key.name}"
            )

    def handle_create(
        self, *, client: str, key_name: str, expires_in_days: int | None, replace: bool, **options: Any
    ) -> None:
        expires_at = new_key_expiry(key_name, expires_in_days)
        issue_and_print(self, _client(client), key_name, expires_at, replace=replace)

    def handle_revoke(self, *, prefix: str, client: str | None, **options: Any) -> None:
        keys = APIKey.objects.filter(prefix=prefix, revoked=False)
        if client:
            keys = keys.filter(user=_client(client))
        found = list(keys.select_related("user"))
        if not found:
            raise CommandError(f"No active API key with prefix {prefix!r}.")
        if len(found) > 1:
            raise CommandError(f"Prefix {prefix!r} names {len(found)} active keys; add --client.")
        found[0].revoke()
        self.stdout.write(f"Revoked API key {prefix}… {found[0].name!r} of {found[0].user.get_username()!r}.")
