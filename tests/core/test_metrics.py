"""core.metrics: one outcome vocabulary with the API, refusals counted, no `_created` series,
OpenMetrics on request, and nothing for promtool to find."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from core import metrics
from fakeprovider import FakeProvider
from payments import outcomes, provider, transitions
from payments.errors import PaymentError
from payments.models import Transaction
from payments.provider import Cause
from payments.services.charge import raise_for_status
from tests.support.health import OPERATOR_TOKEN, operator_get

CHARGE = {"amount": 1999, "currency": "USD", "source": "tok_visa"}
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def scrape_text(client: Client, accept: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    if accept:
        headers["Accept"] = accept
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(django_settings, "METRICS_TOKEN", OPERATOR_TOKEN)
        response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    return response


def families(client: Client) -> dict[str, Any]:
    text = operator_get(client, "/metrics").content.decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def values(client: Client, family: str, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in families(client)[family].samples if s.name.endswith("_total")}


def listed_in_help(help_text: str) -> set[str]:
    """The values a help text lists after its colon: `…: a, b, c.`"""
    return set(help_text.split(": ", 1)[1].rstrip(".").split(", "))


def answer_of(status_code: int, body: dict[str, Any]) -> str:
    """The row of payments.outcomes that an API answer is, read from the answer alone."""
    if status_code == 201:
        return "succeeded"
    error = body["error"]
    rows = [a for a in outcomes.ANSWERS if (a.http_status, a.error_type) == (status_code, error["type"])]
    exact = [a for a in rows if a.code == error["code"]]
    [row] = exact or [a for a in rows if a.code == "<cause>"]
    return row.name


# --- the vocabulary ---------------------------------------------------------------------------


def test_outcome_values_are_answers_of_the_table_and_attempt_outcomes_are_the_causes() -> None:
    assert set(metrics.CHARGE_OUTCOMES) <= set(outcomes.BY_NAME)
    assert set(metrics.ATTEMPT_OUTCOMES) == {cause.value for cause in Cause}
    assert all(
        outcomes.answer("provider_unavailable").code == "<cause>" for _ in metrics.CHARGE_REFUSAL_CODES
    )


def test_help_texts_list_exactly_the_values_exposed(transactional_db: None, client: Client) -> None:
    found = families(client)

    charges, refusals = found["paymentsite_charges"], found["paymentsite_charge_refusals"]
    attempts = found["paymentsite_provider_request_duration_seconds"]
    assert listed_in_help(charges.documentation) == set(metrics.CHARGE_OUTCOMES)
    assert {s.labels["outcome"] for s in charges.samples} == set(metrics.CHARGE_OUTCOMES)
    assert listed_in_help(refusals.documentation) == set(metrics.CHARGE_REFUSAL_CODES)
    assert {s.labels["code"] for s in refusals.samples} == set(metrics.CHARGE_REFUSAL_CODES)
    assert listed_in_help(attempts.documentation) == set(metrics.ATTEMPT_OUTCOMES)


def transaction(**fields: Any) -> Transaction:
    now = timezone.now()
    return Transaction(amount=100, currency="USD", attempts=1, created_at=now, updated_at=now, **fields)


STATES = {
    "succeeded": {"status": "succeeded"},
    "declined": {"status": "declined", "error_type": "card_error", "error_code": "card_declined"},
    "rejected": {"status": "declined", "error_type": "provider_rejected", "error_code": "rejected"},
    "unknown": {"status": "unknown", "error_type": "outcome_unknown", "error_code": "provider_timeout"},
    "retry": {"status": "failed", "error_type": "provider_error", "error_code": "provider_error"},
    "exhausted": {"status": "failed", "error_type": "provider_error", "error_code": "provider_error"},
    "canceled": {"status": "canceled"},
    "pending": {"status": "pending"},
}


@pytest.mark.parametrize("state", STATES)
def test_the_counted_answer_is_the_one_the_api_raises(state: str) -> None:
    txn = transaction(**STATES[state])
    if state == "retry":
        txn.next_retry_at = timezone.now() + timedelta(minutes=1)
    try:
        raise_for_status(txn)
        raised = "succeeded"
    except PaymentError as error:
        raised = type(error).answer_name

    assert transitions.answer_name(txn) == raised
    if state != "pending":  # a charge that was sent never stays pending
        assert raised in metrics.CHARGE_OUTCOMES


# --- what the API answered is what is counted ---------------------------------------------------


@pytest.fixture
def quick_provider(settings: Any) -> Any:
    settings.PAYMENT_MAX_RETRIES = 0
    return settings


SCENARIOS = {
    "tok_visa": None,
    "tok_chargeDeclined": None,
    "tok_timeout": None,
    "tok_error": None,
    "rejected": {"kind": "status", "status": 422},
    "exhausted": None,
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_charge_is_counted_under_the_answer_the_api_gave(
    api: APIClient, client: Client, quick_provider: Any, fake_provider: FakeProvider, scenario: str
) -> None:
    source = scenario if scenario.startswith("tok_") else "tok_visa"
    if scenario == "exhausted":
        quick_provider.PAYMENT_MAX_ATTEMPTS = 1
        source = "tok_error"
    if SCENARIOS[scenario]:
        fake_provider.inject(SCENARIOS[scenario])
    before = values(client, "paymentsite_charges", "outcome")

    response = api.post("/api/v1/charges", {**CHARGE, "source": source}, format="json")
    after = values(client, "paymentsite_charges", "outcome")

    expected = answer_of(response.status_code, response.json())
    moved = {
        outcome: after[outcome] - before[outcome] for outcome in after if after[outcome] != before[outcome]
    }
    assert moved == {expected: 1}, (response.status_code, response.json())


def test_a_timeout_counts_as_outcome_unknown_and_its_attempt_as_provider_timeout(
    api: APIClient, client: Client, quick_provider: Any
) -> None:
    response = api.post("/api/v1/charges", {**CHARGE, "source": "tok_timeout"}, format="json")
    found = families(client)

    assert (response.status_code, response.json()["error"]["code"]) == (504, "provider_timeout")
    assert any(
        s.labels == {"outcome": "outcome_unknown"} and s.value >= 1
        for s in found["paymentsite_charges"].samples
    )
    timed_out = [
        s.value
        for s in found["paymentsite_provider_request_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels == {"kind": "charge", "outcome": "provider_timeout"}
    ]
    assert timed_out and timed_out[0] >= 1


# --- refusals --------------------------------------------------------------------------------------


def refused(api: APIClient, client: Client) -> tuple[str, dict[str, float]]:
    before = values(client, "paymentsite_charge_refusals", "code")
    response = api.post("/api/v1/charges", CHARGE, format="json")
    after = values(client, "paymentsite_charge_refusals", "code")
    assert response.status_code == 503
    return response.json()["error"]["code"], {c: after[c] - before[c] for c in after if after[c] != before[c]}


def test_a_refusal_by_the_open_breaker_is_counted(api: APIClient, client: Client, settings: Any) -> None:
    settings.PAYMENT_BREAKER_FAILURES = 1
    settings.PAYMENT_BREAKER_RESET_S = 30
    provider.get_client().breaker.record_failure()
    try:
        code, moved = refused(api, client)
    finally:
        provider.get_client().breaker.reset()

    assert (code, moved) == ("circuit_open", {"circuit_open": 1})


def test_a_refusal_when_every_call_slot_is_taken_is_counted(
    api: APIClient, client: Client, settings: Any
) -> None:
    settings.PAYMENT_MAX_CONCURRENT_CALLS = 1
    with provider.get_client().resilience.call_slot():
        code, moved = refused(api, client)

    assert (code, moved) == ("provider_busy", {"provider_busy": 1})


def test_a_refusal_of_our_credentials_is_counted(
    api: APIClient, client: Client, fake_provider: FakeProvider
) -> None:
    fake_provider.api_key = "sk_someone_else"
    try:
        code, moved = refused(api, client)
    finally:
        fake_provider.api_key = django_settings.PAYMENT_API_KEY
        provider.misconfiguration.clear()

    assert (code, moved) == ("provider_misconfigured", {"provider_misconfigured": 1})


# --- the exposition -----------------------------------------------------------------------------


def test_no_created_series_and_the_plain_format_by_default(api: APIClient, client: Client) -> None:
    api.post("/api/v1/charges", CHARGE, format="json")
    response = scrape_text(client)
    text = response.content.decode()

    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "Accept" in response["Vary"]
    assert "paymentsite_charges_total" in text
    assert "_created" not in text


def test_a_scraper_that_asks_for_openmetrics_gets_it(api: APIClient, client: Client) -> None:
    api.post("/api/v1/charges", CHARGE, format="json")
    response = scrape_text(client, accept=f"{OPENMETRICS},text/plain;version=0.0.4;q=0.5")
    text = response.content.decode()

    assert response["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert text.endswith("# EOF\n")
    parsed = {family.name: family for family in parse_openmetrics(text)}  # strict: raises on a bad line
    assert parsed["paymentsite_charges"].type == "counter"
    assert any(
        s.labels == {"outcome": "succeeded"} and s.value >= 1 for s in parsed["paymentsite_charges"].samples
    )
    assert "_created" not in text


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)")
def test_promtool_finds_nothing_in_a_scrape(
    api: APIClient, client: Client, fake_provider: FakeProvider
) -> None:
    for source in ("tok_visa", "tok_chargeDeclined", "tok_error"):
        api.post("/api/v1/charges", {**CHARGE, "source": source}, format="json")
    text = scrape_text(client).content

    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=30)

    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


# --- README ---------------------------------------------------------------------------------------


def readme_metrics() -> dict[str, tuple[str, set[str]]]:
    readme = (django_settings.BASE_DIR / "README.md").read_text()
    section = readme.split("\n### Metrics\n", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `(paymentsite_\w+)` \| (\w+) \|([^|]*)\|", section, flags=re.MULTILINE)
    return {name: (kind, set(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}


def test_readme_lists_every_metric_with_its_type_and_labels(transactional_db: None, client: Client) -> None:
    exposed = {}
    for family in families(client).values():
        if not family.name.startswith("paymentsite_"):
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {label for sample in family.samples for label in sample.labels if label not in ("le",)}
        exposed[name] = (family.type, labels)
    listed = readme_metrics()

    assert set(listed) == set(exposed)
    for name, (kind, labels) in exposed.items():
        assert listed[name][0] == kind, name
        if labels:  # the pool gauges have no samples, hence no labels, on SQLite
            assert listed[name][1] == labels, name


def test_refund_outcome_values_are_the_refund_answers_a_sent_refund_can_end_in() -> None:
    sent = {
        a.name for a in outcomes.REFUND_ANSWERS if a.status in ("succeeded", "pending", "unknown", "failed")
    }
    assert set(metrics.REFUND_OUTCOMES) == sent - {"refund_in_progress"}


def write_counter(path: Any, pid: int, name: str, value: float) -> None:
    """A worker's counter file, written by prometheus_client's own mmap writer."""
    values = MmapedDict(str(path / f"counter_{pid}.db"))
    values.write_value(mmap_key(name, f"{name}_total", [], [], "help"), value, 0.0)
    values.close()


def total(registry: CollectorRegistry, name: str) -> float:
    return sum(s.value for f in registry.collect() if f.name == name for s in f.samples)


def test_a_worker_file_still_empty_leaves_the_scrape_whole(tmp_path: Any) -> None:
    """A worker's file exists at 0 bytes between its open and its sizing: the other workers'
    values are still read, where MultiProcessCollector failed the scrape (client_python#1199)."""
    write_counter(tmp_path, 101, "paymentsite_example", 3.0)
    write_counter(tmp_path, 102, "paymentsite_example", 4.0)
    (tmp_path / "counter_103.db").touch()  # the third worker, between open and truncate
    (tmp_path / "gauge_livesum_104.db").touch()
    registry = CollectorRegistry()
    registry.register(metrics.WorkerFiles(str(tmp_path)))
    assert total(registry, "paymentsite_example") == 7.0
    upstream = CollectorRegistry()
    multiprocess.MultiProcessCollector(upstream, path=str(tmp_path))
    with pytest.raises(struct.error):  # what a scrape met before (a 500 from /metrics)
        list(upstream.collect())
