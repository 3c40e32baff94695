"""Card sources, whatever their shape, reach no log line whole (core/logs/redaction.py)."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings
from django.db import connection
from rest_framework.test import APIClient

from core.events import log_event
from core.logs.config import logging_config
from core.logs.redaction import forget_card_sources, note_card_source, redact
from payments.models import Transaction

# The shapes a source may take: what the API accepts (payments/api/serializers.py SOURCE_PATTERN:
# letters, digits, `_` and `-`, any prefix or none) and the prefixes providers use.
SOURCES = {
    "pm_1MqLiJLkdIwHu7ixUEgbFdYF": "pm_…FdYF",
    "card_1MvoiELkdIwHu7ixOeFh0o6Q": "card_…0o6Q",
    "src_1Mq3s2LkdIwHu7ix9Q8r7T6u": "src_…7T6u",
    "tok_visa-4242-4242-4242": "tok_…4242",
    "tok_with_under_scores_1881": "tok_…1881",
    "pm_card_visa": "pm_…visa",
    "4111abcdEFGH9876": "…9876",  # no prefix at all
    "Zz-9-no-prefix-5555": "…5555",
}


@pytest.fixture(autouse=True)
def _no_noted_sources() -> Iterator[None]:
    forget_card_sources()
    yield
    forget_card_sources()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("charging pm_1MqLiJLkdIwHu7ixUEgbFdYF now", "charging pm_…FdYF now"),
        ("card_1MvoiELkdIwHu7ixOeFh0o6Q refused", "card_…0o6Q refused"),
        ("src_1Mq3s2LkdIwHu7ix9Q8r7T6u.", "src_…7T6u."),
        ("tok_visa-4242-4242-4242 declined", "tok_…4242 declined"),
        ("tok_chargeDeclined", "tok_…ined"),
        ('{"amount": 1999, "source": "4111abcdEFGH9876"}', '{"amount": 1999, "source": "…9876"}'),
        ('b\'{"source": "Zz-9-no-prefix-5555", "amount": 1}\'', 'b\'{"source": "…5555", "amount": 1}\''),
        ("{'source': 'x-y-z-1234', 'currency': 'USD'}", "{'source': '…1234', 'currency': 'USD'}"),
        ("charge(source='abc_def-9999')", "charge(source='abc_…9999')"),
        ("amount=1999&source=4111abcdEFGH9876&currency=USD", "amount=1999&source=…9876&currency=USD"),
        (
            "SET `source` = 'Zz-9-no-prefix-5555', `status` = 'failed'",
            "SET `source` = '…5555', `status` = 'failed'",
        ),
        ("SET \"source\" = '4111abcdEFGH9876'", "SET \"source\" = '…9876'"),
        ("SET `source` = '', `status` = 'succeeded'", "SET `source` = '', `status` = 'succeeded'"),
        # Not sources: the API's own codes, and what is already masked.
        ("error_type=card_error code card_declined", "error_type=card_error code card_declined"),
        (
            '{"source": "tok_…visa", "source_masked": "pm_…FdYF"}',
            '{"source": "tok_…visa", "source_masked": "pm_…FdYF"}',
        ),
    ],
)
def test_redact_masks_a_source_in_every_shape_and_wherever_it_is_written(raw: str, expected: str) -> None:
    assert redact(raw) == expected


def test_a_noted_source_is_masked_anywhere_in_this_thread_until_forgotten() -> None:
    line = "INSERT INTO t (a, source) VALUES ('x', '4111abcdEFGH9876'); args=('x', '4111abcdEFGH9876')"
    assert "4111abcdEFGH9876" in redact(line), "unprefixed and unnamed: only noting it finds it"

    note_card_source("4111abcdEFGH9876")

    assert redact(line) == "INSERT INTO t (a, source) VALUES ('x', '…9876'); args=('x', '…9876')"
    forget_card_sources()
    assert "4111abcdEFGH9876" in redact(line)


def test_a_field_named_source_is_masked(query_log: io.StringIO) -> None:
    for raw in SOURCES:
        log_event(logging.getLogger("payments.services"), "payment.succeeded", message="ok", source=raw)

    out = query_log.getvalue()
    lines = [json.loads(line) for line in out.splitlines() if "payment.succeeded" in line]
    assert [line["source"] for line in lines] == list(SOURCES.values()), out


@pytest.fixture
def query_log() -> Iterator[io.StringIO]:
    """Our logging (settings' LOGGING) at DEBUG with DB_LOG_QUERIES on, SQL with its parameters.

    Returns what the stdout handler writes.
    """
    logging.config.dictConfig(
        logging_config(
            level="DEBUG",
            log_format="json",
            log_queries=True,
            cloudwatch_log_group=None,
            aws_region=None,
            cloudwatch_endpoint_url=None,
            cloudwatch_send_interval_s=5,
        )
    )
    written = io.StringIO()
    [stdout] = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    stdout.setStream(written)
    connection.force_debug_cursor = True
    try:
        yield written
    finally:
        connection.force_debug_cursor = False
        logging.config.dictConfig(django_settings.LOGGING)


def test_no_source_shape_reaches_the_query_log_or_any_line_of_a_charge(
    api: APIClient, query_log: io.StringIO
) -> None:
    for source in SOURCES:
        # The fake provider takes only tok_ sources (refusing the others, 422): every one is
        # inserted, settled and erased, each step in the query log.
        assert api.post(
            "/api/v1/charges", {"amount": 1999, "currency": "USD", "source": source}, format="json"
        )
    Transaction.objects.filter(source__in=list(SOURCES)).exists()  # a lookup by the value
    logging.getLogger("payments.provider").error("provider said: no such source %s", list(SOURCES))

    text = query_log.getvalue()
    assert "INSERT INTO" in text and "payments_transaction" in text, "the SQL lines were written"
    for source, masked in SOURCES.items():
        assert source not in text, f"{source!r} reached the logs"
        assert masked in text
    assert all(json.loads(line)["level"] for line in text.splitlines())
