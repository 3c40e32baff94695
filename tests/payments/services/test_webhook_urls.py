"""An endpoint URL's name lookup is bounded by EVENTS_TIMEOUT_MS, against a resolver that
goes silent: the check answers at the bound, hanging lookups never take more than
LOOKUP_THREADS threads, and lookups work again once the resolver does."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from payments.services import webhook_urls
from tests.support.network import HANGING_HOST, HangingResolver

HANGING_URL = f"http://{HANGING_HOST}:8080/hooks"


@pytest.fixture(autouse=True)
def short_bound(settings: Any) -> Any:
    settings.EVENTS_ALLOW_PRIVATE_URLS = True
    settings.EVENTS_TIMEOUT_MS = 200
    return settings


def test_a_name_that_gets_no_answer_is_refused_at_the_bound(hanging_resolver: HangingResolver) -> None:
    with pytest.raises(webhook_urls.URLRefused, match=r"did not resolve within 0\.2 s"):
        webhook_urls.check_url(HANGING_URL)
    assert hanging_resolver.hanging == 1, "the lookup goes on on its own thread"


def test_hanging_lookups_take_at_most_their_threads_and_free_them_when_answered(
    hanging_resolver: HangingResolver,
) -> None:
    refused: list[str] = []

    def check() -> None:
        try:
            webhook_urls.check_url(HANGING_URL)
        except webhook_urls.URLRefused as exc:
            refused.append(str(exc))

    checks = [threading.Thread(target=check) for _ in range(webhook_urls.LOOKUP_THREADS + 3)]
    for thread in checks:
        thread.start()
    for thread in checks:
        thread.join(timeout=10)

    assert len(refused) == webhook_urls.LOOKUP_THREADS + 3
    assert hanging_resolver.hanging == webhook_urls.LOOKUP_THREADS
    with pytest.raises(webhook_urls.URLRefused, match="did not resolve within"):
        webhook_urls.check_url("http://localhost:8080/")  # every lookup thread hangs: none is left

    hanging_resolver.release()
    hanging_resolver.wait_until_hanging(0)
    target = webhook_urls.check_url("http://localhost:8080/")
    assert target is not None and target.address in ("127.0.0.1", "::1")


def test_a_name_that_does_not_exist_is_refused_as_such(settings: Any) -> None:
    settings.EVENTS_TIMEOUT_MS = 5000
    with pytest.raises(webhook_urls.URLRefused, match="does not resolve"):
        webhook_urls.check_url("http://no-such-host.invalid/")
