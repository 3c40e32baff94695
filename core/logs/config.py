"""settings.LOGGING: which handlers, filters and formatters every process uses.

Django applies it in every process at start-up (in each gunicorn worker after the fork,
since the app is not preloaded).
"""

from __future__ import annotations

from typing import Any


def logging_config(
    *,
    level: str,
    log_format: str,
    log_queries: bool,
    cloudwatch_log_group: str | None,
    aws_region: str | None,
    cloudwatch_endpoint_url: str | None,
    cloudwatch_send_interval_s: float,
) -> dict[str, Any]:
    """settings.LOGGING: one stream of lines on stdout, and CloudWatch when a log group is set."""
    filters = ["request_id", "redact"]
    handlers: dict[str, dict[str, Any]] = {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": log_format,
            "filters": filters,
        },
    }
    if cloudwatch_log_group:
        handlers["cloudwatch"] = {
            "()": "core.logs.cloudwatch.cloudwatch_handler",
            "log_group": cloudwatch_log_group,
            "region": aws_region,
            "endpoint_url": cloudwatch_endpoint_url,
            "send_interval_s": cloudwatch_send_interval_s,
            "formatter": "json",
            "filters": filters,
        }
    # Django's own loggers stay at INFO or quieter: its DEBUG lines are for its developers.
    django_level = "INFO" if level == "DEBUG" else level
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "core.logs.request_id.RequestIdFilter"},
            "redact": {"()": "core.logs.redaction.RedactSecrets"},
        },
        "formatters": {
            "json": {"()": "core.logs.formatters.JsonFormatter"},
            "console": {"()": "core.logs.formatters.ConsoleFormatter"},
        },
        "handlers": handlers,
        "root": {"handlers": list(handlers), "level": level},
        "loggers": {
            # Django's defaults send these to stderr in another format; one stream is easier to ship.
            "django": {"handlers": [], "level": django_level, "propagate": True},
            "django.server": {"handlers": [], "level": django_level, "propagate": True},
            "django.db.backends": {"level": "DEBUG" if log_queries else "INFO"},
            "botocore": {"level": "WARNING"},
            "boto3": {"level": "WARNING"},
        },
    }
