"""Events out in tests: one pass of the delivery loop, as run_worker makes it, and what a
receiver heard per endpoint, each request with the answer it was given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from payments import services
from tests.support.receiver import Received


def deliver_pass(actor: str = "test") -> list[Any]:
    """One pass of run_worker's deliver loop: every due delivery tried at most once."""
    tried: set[Any] = set()
    results = []
    while (result := services.deliver_next(skip_ids=tried, actor=actor)) is not None:
        tried.add(result.transaction_id)
        results.append(result)
    return results


@dataclass(frozen=True)
class Heard:
    """One delivery request an endpoint's receiver got, and the status it answered (None: down)."""

    path: str
    event_id: str
    status: int | None
    request: Received


def heard(requests: list[Received], status: int | None) -> list[Heard]:
    return [Heard(r.path, r.headers.get("webhook-id", ""), status, r) for r in requests]
