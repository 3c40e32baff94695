"""The last time the provider refused our credentials or URL (401/403/404 on a charge), until
an answer proves them right again: /health/ fails meanwhile (an operator must act)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

_refused: dict[str, Any] = {}


def note_refused(http_status: int | None) -> None:
    _refused.update(at=timezone.now().isoformat(), http_status=http_status)


def current() -> dict[str, Any] | None:
    """{"at", "http_status"} of the refusal, or None when the provider accepts us."""
    return dict(_refused) or None


def clear() -> None:
    """The provider accepted our key and URL."""
    _refused.clear()
