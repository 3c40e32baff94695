from __future__ import annotations

import getpass
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from payments import services


class Command(BaseCommand):
    help = (
        f'Create (or update) a staff user in the "{services.SUPPORT_GROUP_NAME}" group: it can view '
        "payments, retry, reconcile and cancel them, and nothing else."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--password", help="Avoid on shared machines (it shows in `ps`); prompted for when omitted."
        )

    def handle(self, *args: Any, username: str, email: str, password: str | None, **options: Any) -> None:
        if password is None:
            password = self._prompt_password()
        user, created = services.support_user_create(username=username, password=password, email=email)
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} support user {user.get_username()!r} in {services.SUPPORT_GROUP_NAME!r}.")

    def _prompt_password(self) -> str:
        if not sys.stdin.isatty():
            raise CommandError("No terminal to ask for a password on; pass --password.")
        password = getpass.getpass("Password: ")
        if not password or password != getpass.getpass("Password (again): "):
            raise CommandError("The passwords were empty or did not match.")
        return password
