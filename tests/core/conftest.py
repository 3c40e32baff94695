"""A local CloudWatch Logs endpoint (moto's server on loopback) and our logging wired to it."""

from __future__ import annotations

import logging
import logging.config
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from django.conf import settings as django_settings
from moto.server import ThreadedMotoServer

from core.logs.cloudwatch import CloudWatchHandler
from core.logs.config import logging_config
from tests.support.cloudwatch import AWS_REGION, ConfigureLogging, ShippedLogs

FAKE_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture(scope="session")
def cloudwatch_endpoint() -> Iterator[str]:
    """moto's CloudWatch Logs over HTTP on loopback, with fake credentials for the whole session."""
    # Its request log would otherwise be shipped back to it.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_AWS_ENV.items():
            patch.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def logs_client(cloudwatch_endpoint: str) -> Any:
    return boto3.session.Session().client("logs", region_name=AWS_REGION, endpoint_url=cloudwatch_endpoint)


@pytest.fixture
def configure_logging(capsys: pytest.CaptureFixture[str]) -> Iterator[ConfigureLogging]:
    """Apply our LOGGING (as settings builds it) for one test; stdout goes to capsys.

    Returns the CloudWatch handler when a log group is given.
    """

    def configure(
        *,
        log_format: str = "json",
        level: str = "INFO",
        log_queries: bool = False,
        log_group: str | None = None,
        endpoint_url: str | None = None,
    ) -> logging.Handler | None:
        logging.config.dictConfig(
            logging_config(
                level=level,
                log_format=log_format,
                log_queries=log_queries,
                cloudwatch_log_group=log_group,
                aws_region=AWS_REGION,
                cloudwatch_endpoint_url=endpoint_url,
                # Long, so that only an explicit flush (or shutdown) sends: tests wait on flush().
                cloudwatch_send_interval_s=60,
            )
        )
        return next((h for h in logging.getLogger().handlers if isinstance(h, CloudWatchHandler)), None)

    try:
        yield configure
    finally:
        # Closes our handlers (flushing CloudWatch) and puts back the suite's configuration.
        logging.config.dictConfig(django_settings.LOGGING)


@pytest.fixture
def shipped_logs(
    cloudwatch_endpoint: str, logs_client: Any, configure_logging: ConfigureLogging
) -> ShippedLogs:
    group = f"/paymentsite/test-{uuid.uuid4().hex[:12]}"
    handler = configure_logging(log_group=group, endpoint_url=cloudwatch_endpoint)
    assert handler is not None
    return ShippedLogs(group=group, handler=handler, client=logs_client)
