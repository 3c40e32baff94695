"""`manage.py create_support_user NAME`.

The password comes from --password, else SUPPORT_USER_PASSWORD, else a prompt on the
terminal; with none of them the command stops with one line.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from payments import services

PASSWORD_VARIABLE = "SUPPORT_USER_PASSWORD"


class Command(BaseCommand):
    help = (
        f'Create (or update) a staff user in the "{services.SUPPORT_GROUP_NAME}" group: it can view '
        "payments, retry, reconcile and cancel them, and nothing else."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--password",
            help=f"Avoid on shared machines (it shows in `ps`). Without it: ${PASSWORD_VARIABLE}, "
            "else a prompt on the terminal.",
        )

    def handle(self, *args: Any, username: str, email: str, password: str | None, **options: Any) -> None:
        if password is None:
            password = os.environ.get(PASSWORD_VARIABLE) or self._prompt_password()
        user, created = services.support_user_create(username=username, password=password, email=email)
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} support user {user.get_username()!r} in {services.SUPPORT_GROUP_NAME!r}.")

    def _prompt_password(self) -> str:
        if not sys.stdin.isatty():
            raise CommandError(
                f"No password: set {PASSWORD_VARIABLE}, or run this in a terminal to be asked."
            )
        try:
            password = getpass.getpass("Password: ")
            again = getpass.getpass("Password (again): ")
        except EOFError:
            raise CommandError("No password given.") from None
        if not password or password != again:
            raise CommandError("The passwords were empty or did not match.")
        return password
