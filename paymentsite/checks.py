from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core import checks

from paymentsite.log import log_event

logger = logging.getLogger(__name__)


@checks.register(checks.Tags.compatibility, deploy=False)
def configuration_is_valid(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return [
        checks.Error(message, hint="See .env.example and README.md, Configuration.", id="paymentsite.E001")
        for message in settings.CONFIG_ERRORS
    ]


def raise_if_misconfigured() -> None:
    """Stop a process that does not run Django's checks (gunicorn) on a bad value."""
    if settings.CONFIG_ERRORS:
        log_event(
            logger,
            "config.invalid",
            level=logging.CRITICAL,
            message="Invalid configuration: " + " ".join(settings.CONFIG_ERRORS),
            errors=list(settings.CONFIG_ERRORS),
        )
        raise SystemExit("Invalid configuration:\n  " + "\n  ".join(settings.CONFIG_ERRORS))
