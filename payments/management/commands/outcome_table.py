from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from payments import outcomes


class Command(BaseCommand):
    help = "Print the outcome table (payments/outcomes.py) as README's Guarantees section shows it."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(outcomes.markdown_table())
