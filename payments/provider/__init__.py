"""The provider port: the types every adapter answers with, and the factory for this process's client.

The adapter is chosen by the setting PAYMENT_PROVIDER_CLASS (a dotted path; the HTTP adapter
`payments.provider.http.HttpProvider` by default), in the manner of django-payments'
provider_factory: a second provider is one new module with a class that has a `Settings`
type (read from Django's settings by `Settings.from_django()`) and the methods of
`interface.PaymentProvider`.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from payments.provider import misconfiguration
from payments.provider.interface import (
    DEFINITIVE,
    Attempt,
    Cause,
    Outcome,
    PaymentProvider,
    ProviderResult,
    describe,
)
from payments.provider.resilience import CLOSED, HALF_OPEN, OPEN, CircuitOpen, ProviderBusy

__all__ = [
    "CLOSED",
    "DEFINITIVE",
    "HALF_OPEN",
    "OPEN",
    "Attempt",
    "Cause",
    "CircuitOpen",
    "Outcome",
    "PaymentProvider",
    "ProviderBusy",
    "ProviderResult",
    "describe",
    "get_client",
    "in_flight_window_s",
    "misconfigured",
    "note_misconfigured",
]

_client: Any = None
_client_lock = threading.Lock()


def get_client() -> PaymentProvider:
    """The process's client, rebuilt only when the provider settings change (tests)."""
    global _client
    adapter = import_string(settings.PAYMENT_PROVIDER_CLASS)
    wanted = adapter.Settings.from_django()
    client = _client
    if type(client) is adapter and client.settings == wanted:
        return client
    with _client_lock:
        if type(_client) is not adapter or _client.settings != wanted:
            _client = adapter(wanted)
        return _client


def in_flight_window_s() -> float:
    """Seconds after a call began during which the provider may still act on it.

    The client's `call_deadline_s()` (the last moment any of the call's requests can be open:
    PAYMENT_DEADLINE_MS + PAYMENT_CONNECT_TIMEOUT_MS + PAYMENT_TIMEOUT_MS, each attempt's socket
    closed at its bound) plus PAYMENT_PROVIDER_ALLOWANCE_S for the provider's own processing of a
    request it received before we closed the connection. Before it ends, "no such charge" from
    a lookup proves nothing.
    """
    return get_client().call_deadline_s() + settings.PAYMENT_PROVIDER_ALLOWANCE_S


def note_misconfigured(http_status: int | None) -> None:
    """The provider refused our credentials or URL: /health/ fails until an answer proves them right."""
    misconfiguration.note_refused(http_status)


def misconfigured() -> dict[str, Any] | None:
    """{"at", "http_status"} of the refusal, or None when the provider accepts us."""
    return misconfiguration.current()
