"""What this process last learned about our credentials and URL from the provider.

A refusal (401/403, or 404 on a charge) makes /health/ fail until an answer proves them right
again. This module keeps only this process's verdict, in memory, on the charge path (no
database, no lock held across anything). The health app shares it with the other processes
(health.credentials: a row in the database, read and written by a thread in each process) and
listens here so that a change is shared at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone


@dataclass(frozen=True)
class Verdict:
    refused: bool
    at: datetime
    http_status: int | None = None  # of the refusal


_latest: Verdict | None = None
_lock = threading.Lock()
_listeners: list[Callable[[Verdict], None]] = []


def _note(verdict: Verdict) -> None:
    global _latest
    with _lock:
        _latest = verdict
    for listener in list(_listeners):
        listener(verdict)


def note_refused(http_status: int | None) -> None:
    _note(Verdict(refused=True, at=timezone.now(), http_status=http_status))


def clear() -> None:
    """The provider accepted our key and URL (a definitive answer)."""
    _note(Verdict(refused=False, at=timezone.now()))


def latest() -> Verdict | None:
    """This process's last verdict; None before the provider has answered it either way."""
    return _latest


def current() -> dict[str, Any] | None:
    """{"at", "http_status"} of this process's refusal, or None when the provider accepts us."""
    verdict = _latest
    if verdict is None or not verdict.refused:
        return None
    return {"at": verdict.at.isoformat(), "http_status": verdict.http_status}


def add_listener(listener: Callable[[Verdict], None]) -> None:
    """Called with each new verdict, on the thread that learned it: it must return at once."""
    if listener not in _listeners:
        _listeners.append(listener)


def forget() -> None:
    """As in a process that just started (tests)."""
    global _latest
    with _lock:
        _latest = None
