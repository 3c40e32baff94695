from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.compatibility, deploy=False)
def configuration_is_valid(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return [
        checks.Error(message, hint="See .env.example and README.md, Configuration.", id="paymentsite.E001")
        for message in settings.CONFIG_ERRORS
    ]


def raise_if_misconfigured() -> None:
    """Stop a process that does not run Django's checks (gunicorn) on a bad value."""
    if settings.CONFIG_ERRORS:
        raise SystemExit("Invalid configuration:\n  " + "\n  ".join(settings.CONFIG_ERRORS))
