"""health.credentials: the verdict on the provider credentials, shared through the database.

Another process is played by rows written directly and by forgetting this process's own
verdict (as a process that just started); tests/health/test_gunicorn.py runs real
workers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from health.credentials import fingerprint, shared_credentials
from health.models import ProviderCredentials
from payments.provider import misconfiguration
from tests.support.health import check, get_health
from tests.support.service import TEST_API_KEY


@pytest.fixture(autouse=True)
def fresh_process(transactional_db: None) -> Iterator[None]:
    misconfiguration.forget()
    shared_credentials._shared = None
    yield
    misconfiguration.forget()
    shared_credentials._shared = None


def as_a_new_process() -> None:
    misconfiguration.forget()
    shared_credentials._shared = None


def credentials(client: Client) -> dict[str, Any]:
    return check(get_health(client)[1], "payment-provider:credentials")


def test_a_refusal_here_is_shared_and_a_process_that_never_charged_fails_too() -> None:
    client = Client()
    misconfiguration.note_refused(401)
    shared_credentials.sync_once()
    as_a_new_process()

    before_sync = credentials(client)
    shared_credentials.sync_once()
    after_sync = credentials(client)

    assert before_sync["status"] == "pass", "nothing known before the first read"
    assert (after_sync["status"], after_sync["observedValue"]) == ("fail", 401)
    [row] = ProviderCredentials.objects.all()
    assert (row.fingerprint, row.refused, row.http_status) == (fingerprint(), True, 401)


def test_an_acceptance_elsewhere_clears_a_refusal_here() -> None:
    client = Client()
    misconfiguration.note_refused(403)
    shared_credentials.sync_once()
    assert credentials(client)["status"] == "fail"
    # Another process's charge was accepted afterwards, and it wrote so.
    ProviderCredentials.objects.filter(pk=fingerprint()).update(
        refused=False, http_status=None, at=timezone.now() + timedelta(seconds=1)
    )

    still_cached = credentials(client)
    shared_credentials.sync_once()
    cleared = credentials(client)

    assert still_cached["status"] == "fail"
    assert cleared["status"] == "pass"
    assert ProviderCredentials.objects.get().refused is False, "an older verdict never overwrites a newer one"


def test_an_acceptance_here_is_written_over_an_older_refusal() -> None:
    ProviderCredentials.objects.create(
        fingerprint=fingerprint(), refused=True, http_status=401, at=timezone.now() - timedelta(seconds=5)
    )
    shared_credentials.sync_once()
    client = Client()
    assert credentials(client)["status"] == "fail"

    misconfiguration.clear()  # a charge accepted in this process
    here = credentials(client)
    shared_credentials.sync_once()

    assert here["status"] == "pass", "this process's newer verdict counts at once"
    row = ProviderCredentials.objects.get()
    assert (row.refused, row.http_status) == (False, None)


def test_a_refusal_of_another_key_does_not_apply(settings: Any) -> None:
    settings.PAYMENT_API_KEY = "sk_the_old_key"
    misconfiguration.note_refused(401)
    shared_credentials.sync_once()
    settings.PAYMENT_API_KEY = TEST_API_KEY  # the fix, deployed: new processes
    as_a_new_process()

    shared_credentials.sync_once()

    assert credentials(Client())["status"] == "pass"
    assert ProviderCredentials.objects.count() == 1


def test_the_row_never_holds_the_key(settings: Any) -> None:
    misconfiguration.note_refused(401)
    shared_credentials.sync_once()

    row = ProviderCredentials.objects.get()
    stored = " ".join(str(value) for value in vars(row).values())
    assert settings.PAYMENT_API_KEY not in stored
    assert len(row.fingerprint) == 64


def test_without_a_row_an_acceptance_writes_nothing() -> None:
    misconfiguration.clear()

    shared_credentials.sync_once()

    assert ProviderCredentials.objects.count() == 0
    assert credentials(Client())["status"] == "pass"
