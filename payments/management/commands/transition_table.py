from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from payments import refund_transitions, transitions


class Command(BaseCommand):
    help = (
        "Print the transition table (payments/transitions.py) as docs/architecture.md shows it, "
        "between its <!-- transitions:begin --> and <!-- transitions:end --> markers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--refunds",
            action="store_true",
            help="A refund's table (payments/refund_transitions.py; docs/architecture.md's "
            "<!-- refund-transitions:begin --> block) instead of a charge's.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        table = refund_transitions.render_refund_table() if options["refunds"] else transitions.render_table()
        self.stdout.write(table, ending="")
