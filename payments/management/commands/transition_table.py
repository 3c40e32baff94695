from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from payments import transitions


class Command(BaseCommand):
    help = (
        "Print the transition table (payments/transitions.py) as docs/architecture.md shows it, "
        "between its <!-- transitions:begin --> and <!-- transitions:end --> markers."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(transitions.render_table(), ending="")
