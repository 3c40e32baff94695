#!/usr/bin/env python
from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "paymentsite.settings")
    from django.core.management import execute_from_command_line
    from django.db import OperationalError

    try:
        execute_from_command_line(sys.argv)
    except OperationalError as error:
        # A missing MariaDB database is one line from every command (`check` reports it as
        # paymentsite.E002), not a traceback from deep inside the driver.
        from core.db import missing_database_message

        message = missing_database_message(error)
        if message is None:
            raise
        sys.exit(f"CommandError: {message}")


if __name__ == "__main__":
    main()
