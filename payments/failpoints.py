"""Named points in the charge and refund paths where tests inject faults.

The model-based test (tests/payments/test_model.py) arms a point to make the database fail
during settle, or to stop a request between the provider call and settle as a killed
process would. Unarmed, `hit` is one dictionary lookup. No maintained Python library offers
in-process failpoints for a Django code path (the fail crates exist for Rust and Go), hence
these few lines.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

_armed: dict[str, Callable[[], None]] = {}
_lock = threading.Lock()

POINTS = frozenset(
    {
        "charge.before_insert",  # before the pending row is written
        "charge.before_call",  # the row is committed; the provider has not been called
        "charge.after_call",  # the provider answered; nothing recorded yet
        "settle",  # inside settle's transaction, before anything is written
        # The refund path's: the same moments of a refund (payments.services.refunds).
        "refund.before_insert",
        "refund.before_call",
        "refund.after_call",
        "refund.settle",
        "client_event.written",  # an event is written, its state change's transaction still open
    }
)


class SimulatedCrash(BaseException):
    """Raised at a failpoint to stop a request as a killed process would: nothing below runs."""


def hit(name: str) -> None:
    action = _armed.get(name)
    if action is not None:
        action()


@contextlib.contextmanager
def armed(name: str, action: Callable[[], None]) -> Iterator[None]:
    if name not in POINTS:
        raise ValueError(f"No failpoint {name!r}; known: {sorted(POINTS)}")
    with _lock:
        _armed[name] = action
    try:
        yield
    finally:
        with _lock:
            _armed.pop(name, None)


def once(action: Callable[[], None]) -> Callable[[], None]:
    """Wrap an action so that it fires on the first hit only."""
    fired = threading.Event()

    def run() -> None:
        if not fired.is_set():
            fired.set()
            action()

    return run
