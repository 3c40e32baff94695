"""Create (or find) an API client and print a new API key for it, alone on stdout.

A password (for the payment page) is never read from the command line, where `ps`
shows it: `--set-password` takes it from API_CLIENT_PASSWORD or, on a terminal, a prompt.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apikeys.cli import active_keys_named, add_new_key_arguments, issue_and_print, new_key_expiry

PASSWORD_ENV = "API_CLIENT_PASSWORD"


def read_password(username: str) -> str:
    password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        if not sys.stdin.isatty():
            raise CommandError(
                f"--set-password needs {PASSWORD_ENV} in the environment or a terminal to prompt on."
            )
        password = getpass.getpass(f"Password for {username}: ")
        if password != getpass.getpass("Password (again): "):
            raise CommandError("The passwords do not match.")
    if not password:
        raise CommandError("The password is empty.")
    return password


class Command(BaseCommand):
    help = "Create (or find) an API client user and print a new API key for it (shown once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--set-password",
            action="store_true",
            help=f"Also set a password, to log in to the payment page: from {PASSWORD_ENV}, or a prompt.",
        )
        parser.add_argument("--rotate", action="store_true", help="Revoke the client's other keys.")
        add_new_key_arguments(parser, default_name="default")

    def handle(
        self,
        *args: Any,
        username: str,
        set_password: bool,
        rotate: bool,
        key_name: str,
        expires_in_days: int | None,
        replace: bool,
        **options: Any,
    ) -> None:
        expires_at = new_key_expiry(key_name, expires_in_days)
        existing = get_user_model().objects.filter(username=username).first()
        if existing is not None and not rotate:  # refused before the password is asked for or set
            active_keys_named(existing, key_name, replace=replace)
        password = read_password(username) if set_password else None
        user, created = get_user_model().objects.get_or_create(username=username)
        if password is not None:
            try:
                validate_password(password, user)
            except ValidationError as error:
                raise CommandError(f"{PASSWORD_ENV}: {' '.join(error.messages)}") from None
            user.set_password(password)
            user.save(update_fields=["password"])
        if rotate:
            revoked = user.api_keys.filter(revoked=False).update(revoked=True)
            self.stderr.write(f"Revoked {revoked} earlier key(s).")
        self.stderr.write(f"{'Created' if created else 'Found'} API client {username!r}.")
        issue_and_print(self, user, key_name, expires_at, replace=replace)
