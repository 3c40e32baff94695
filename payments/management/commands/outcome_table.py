from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from payments import outcomes


class Command(BaseCommand):
    help = "Print the outcome table (payments/outcomes/) as README's Guarantees section shows it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--refunds", action="store_true", help="The refunds' table instead of the charges'."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        answers = outcomes.REFUND_ANSWERS if options["refunds"] else outcomes.ANSWERS
        self.stdout.write(outcomes.markdown_table(answers))
