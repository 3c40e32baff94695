"""A local CloudWatch Logs endpoint's helpers: what a service process needs to ship to it, and
reading back what arrived."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fakeprovider import FakeProvider
from tests.support.service import TEST_API_KEY

AWS_REGION = "us-east-1"
ConfigureLogging = Callable[..., logging.Handler | None]


@dataclass
class ShippedLogs:
    group: str
    handler: logging.Handler
    client: Any

    def messages(self, filter_pattern: str = "") -> list[str]:
        """Flush the handler, then read the group back from the endpoint."""
        self.handler.flush()
        pattern = {"filterPattern": filter_pattern} if filter_pattern else {}
        paginator = self.client.get_paginator("filter_log_events")
        return [
            event["message"]
            for page in paginator.paginate(logGroupName=self.group, **pattern)
            for event in page["events"]
        ]

    def events(self, filter_pattern: str = "") -> list[dict[str, Any]]:
        return [json.loads(message) for message in self.messages(filter_pattern)]


def service_env(
    cloudwatch_endpoint: str, group: str, fake_provider: FakeProvider, **extra: str
) -> dict[str, str]:
    return {
        **os.environ,  # the fake AWS credentials and the test database settings
        "DJANGO_SETTINGS_MODULE": "paymentsite.settings",
        "PAYMENT_SERVICE_URL": fake_provider.url,
        "PAYMENT_API_KEY": TEST_API_KEY,
        "CLOUDWATCH_LOG_GROUP": group,
        "CLOUDWATCH_ENDPOINT_URL": cloudwatch_endpoint,
        "AWS_REGION": AWS_REGION,
        # Long: what arrives was sent by the flush at shutdown.
        "CLOUDWATCH_SEND_INTERVAL_S": "60",
        "LOG_FORMAT": "json",
        **extra,
    }


def shipped_events(logs_client: Any, group: str, filter_pattern: str) -> list[dict[str, Any]]:
    events = logs_client.filter_log_events(logGroupName=group, filterPattern=filter_pattern)["events"]
    return [json.loads(event["message"]) for event in events]
