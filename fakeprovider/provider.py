"""The fake provider itself: its charges and refunds, the fault queue, and the decisions per key."""

from __future__ import annotations

import dataclasses
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote

from fakeprovider.events import EventSender
from fakeprovider.protocol import (
    CHARGES_PATH,
    FINAL_STATUSES,
    HEALTH_PATH,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MODIFIER_KINDS,
    REDIRECT_LOCATION,
    AppliedFault,
    Fault,
    JsonObject,
    _decide,
    _error,
    _garbage,
    _invalid_request,
    _InvalidRequestError,
    _KeyState,
    _other_charge,
    _parse_charge_request,
    _parse_json_object,
    _proxy_404,
    _redirect,
    _Response,
    _status_error,
    _unauthorized,
)
from fakeprovider.refunds import (
    _RefundMode,
    _RefundState,
    make_refund,
    no_such_refund,
    other_refund,
    parse_refund_request,
    refusal,
)
from fakeprovider.server import _Server


class FakeProvider:
    """The fake provider; `start()` serves it on a daemon thread.

    After `stop()`, `start()` serves again on the same port with the same charges, so a test
    can take the provider down and bring it back.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = "sk_test_fake",
        latency_ms: int = 0,
        jitter_ms: int = 0,
        timeout_window_s: float = 10.0,
        events_url: str | None = None,
        events_secret: str = "",
    ) -> None:
        self.host = host
        self.api_key = api_key
        self.latency_ms = latency_ms
        self.jitter_ms = jitter_ms
        self.timeout_window_s = timeout_window_s
        self._port = port
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyState] = {}
        self._requests_by_key: dict[str, int] = {}
        self._faults: deque[Fault] = deque()
        self._faults_applied: list[AppliedFault] = []
        self._trickles: list[JsonObject] = []
        # delayed_commit faults taken for a key, applied when that key's charge is stored.
        self._commit_delays_ms: dict[str, int] = {}
        # Refunds by their own idempotency key (each names its charge key), and what faults
        # taken for a refund key do to its refund when it is made.
        self._refunds: dict[str, _RefundState] = {}
        self._refund_requests_by_key: dict[str, int] = {}
        self._refund_commit_delays_ms: dict[str, int] = {}
        self._refund_modes: dict[str, _RefundMode] = {}
        self._stopping = threading.Event()
        # With events_url: each settled charge and refund is posted there, signed with
        # events_secret (fakeprovider/events.py), under the "event" faults.
        self._events = (
            EventSender(events_url, events_secret, self._take_event_fault, tick=self._announce_refunds)
            if events_url
            else None
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError("FakeProvider picks its port on start(); start it first.")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{CHARGES_PATH}"

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.port}{HEALTH_PATH}"

    def start(self) -> FakeProvider:
        if self._server is not None:
            raise RuntimeError("FakeProvider is already running.")
        self._stopping.clear()
        server = _Server((self.host, self._port), self)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-provider-{self._port}",
            daemon=True,
        )
        self._thread.start()
        if self._events is not None:
            self._events.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        self._stopping.set()
        if self._events is not None:
            self._events.stop()
        server.shutdown()
        server.server_close()
        server.close_connections()
        thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def charge_count(self, idempotency_key: str) -> int:
        with self._lock:
            state = self._keys.get(idempotency_key)
            return 1 if state is not None and state.charged else 0

    def total_charges(self) -> int:
        with self._lock:
            return sum(state.charged for state in self._keys.values())

    def request_count(self, idempotency_key: str) -> int:
        with self._lock:
            return self._requests_by_key.get(idempotency_key, 0)

    def in_progress(self, idempotency_key: str) -> bool:
        """Whether a request with this key is being processed (a `slow` fault's wait, say)."""
        with self._lock:
            state = self._keys.get(idempotency_key)
            return state is not None and state.in_progress

    def ledger(self) -> dict[str, JsonObject]:
        """Each charge made, by idempotency key (declines and failures are not charges)."""
        with self._lock:
            return {key: dict(state.charge) for key, state in self._keys.items() if state.charged}

    def committed_at(self) -> dict[str, float]:
        """When each charge in the ledger was committed (Unix time, the wall clock): made and
        seen by lookups, so a delayed_commit's delay included. The start of "how long until the
        client recorded it" (bench/settle_latency.py)."""
        with self._lock:
            return {
                key: state.committed_at
                for key, state in self._keys.items()
                if state.charged and state.committed_at is not None
            }

    def refund_ledger(self) -> dict[str, dict[str, JsonObject]]:
        """Each refund made, failed ones included, by charge key and then refund key:
        {id, status, amount, charge, created} (and failure_reason when failed)."""
        with self._lock:
            self._settle_due_locked()
            ledger: dict[str, dict[str, JsonObject]] = {}
            for key, state in self._refunds.items():
                if state.refund is not None:
                    ledger.setdefault(state.request.charge_key, {})[key] = dict(state.refund)
            return ledger

    def refund_count(self, refund_key: str) -> int:
        """1 if a refund with this key is made and not failed (succeeded, or pending), else 0."""
        with self._lock:
            self._settle_due_locked()
            state = self._refunds.get(refund_key)
            return int(state is not None and state.refund is not None and state.refund["status"] != "failed")

    def total_refunds(self) -> int:
        """Refunds made and not failed (succeeded or pending), over every charge."""
        with self._lock:
            self._settle_due_locked()
            return sum(
                s.refund is not None and s.refund["status"] != "failed" for s in self._refunds.values()
            )

    def refunded_amount(self, charge_key: str) -> int:
        """What counts against the charge: its succeeded and pending refunds (and any being made)."""
        with self._lock:
            self._settle_due_locked()
            return self._refunded_locked(charge_key)

    def refund_request_count(self, refund_key: str) -> int:
        with self._lock:
            return self._refund_requests_by_key.get(refund_key, 0)

    def refund_in_progress(self, refund_key: str) -> bool:
        """Whether a refund request with this key is being processed (a `slow` fault's wait)."""
        with self._lock:
            state = self._refunds.get(refund_key)
            return state is not None and state.in_progress

    def settle_refund(self, refund_key: str, status: str | None = None) -> JsonObject | None:
        """Settle a pending refund now, as `status` ("succeeded" or "failed"; by default what its
        `refund_pending` fault said): the refund, or None if no refund with this key is pending."""
        if status not in (None, "succeeded", "failed"):
            raise ValueError("A refund settles as 'succeeded' or 'failed'.")
        with self._lock:
            state = self._refunds.get(refund_key)
            if state is None or not state.settle(time.monotonic(), status or state.settles_to):
                return None
            return dict(state.refund or {})

    def events_sent(self) -> list[JsonObject]:
        """Each event posted to events_url: id, type, key, fault, the HTTP status it got."""
        return self._events.sent() if self._events is not None else []

    def _take_event_fault(self, key: str) -> Fault | None:
        return self._take_fault("event", key)

    def _emit(self, kind: str, record: JsonObject, key: str, currency: str) -> None:
        if self._events is not None:
            self._events.emit(kind, record, key, currency)

    def _announce_refunds(self) -> None:
        """Queue the event of each refund that has reached succeeded or failed (once each)."""
        if self._events is None:
            return
        with self._lock:
            self._settle_due_locked()
            due = []
            for key, state in self._refunds.items():
                refund = state.refund
                if refund is None or state.announced or refund["status"] not in ("succeeded", "failed"):
                    continue
                state.announced = True
                charge = self._keys[state.request.charge_key].charge or {}
                due.append((dict(refund), key, str(charge.get("currency", ""))))
        for refund, key, currency in due:
            self._emit("refund", refund, key, currency)

    def inject(self, fault: Fault | Mapping[str, Any]) -> None:
        self.inject_many([fault])

    def inject_many(self, faults: Iterable[Fault | Mapping[str, Any]]) -> None:
        """Queue faults in order; all or none (a ValueError names the first invalid one)."""
        parsed = [fault if isinstance(fault, Fault) else Fault.from_dict(fault) for fault in faults]
        with self._lock:
            self._faults.extend(parsed)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def faults_applied(self) -> list[AppliedFault]:
        with self._lock:
            return list(self._faults_applied)

    def trickles(self) -> list[JsonObject]:
        """Each trickled answer: {"sent", "total"} bytes, and "hung_up" if the client closed first."""
        with self._lock:
            return [dict(entry) for entry in self._trickles]

    def reset(self) -> None:
        """Forget charges, refunds, request counts and faults, pending and applied."""
        with self._lock:
            self._keys.clear()
            self._requests_by_key.clear()
            self._faults.clear()
            self._faults_applied.clear()
            self._trickles.clear()
            self._commit_delays_ms.clear()
            self._refunds.clear()
            self._refund_requests_by_key.clear()
            self._refund_commit_delays_ms.clear()
            self._refund_modes.clear()
        if self._events is not None:
            self._events.reset()

    def _note_trickle(self, *, sent: int, total: int, hung_up: bool) -> None:
        with self._lock:
            self._trickles.append({"sent": sent, "total": total, "hung_up": hung_up})

    def _wait_ms_or_stop(self, ms: float) -> bool:
        """Wait; False if the server is stopping."""
        return not self._stopping.wait(ms / 1000)

    def _take_fault(self, on: str, key: str | None) -> Fault | None:
        if not self._faults:  # the hot path: no lock while nothing is queued
            return None
        with self._lock:
            fault = next((fault for fault in self._faults if fault.matches(on, key)), None)
            if fault is not None:
                self._faults.remove(fault)
                self._faults_applied.append((fault.kind, on, key))
            return fault

    def _wait_ms(self, ms: float) -> None:
        # stop() wakes every wait, so a held request never outlives the server.
        if ms > 0:
            self._stopping.wait(ms / 1000)

    def _stored_charge(self, key: str) -> JsonObject | None:
        with self._lock:
            state = self._keys.get(key)
            return state.charge if state is not None else None

    def _serve_charge(self, authorization: str | None, key: str | None, raw_body: bytes) -> _Response | None:
        """The answer to a charge request, or None to close the connection without one."""
        if key:
            with self._lock:
                self._requests_by_key[key] = self._requests_by_key.get(key, 0) + 1
        return self._serve(
            "charge",
            key,
            lambda slow_ms: self._charge(authorization, key, raw_body, slow_ms=slow_ms),
            stored=lambda: self._stored_charge(key) if key else None,
        )

    def _serve_lookup(self, authorization: str | None, raw_key: str) -> _Response | None:
        """The answer to a lookup, or None to close the connection without one."""
        key = unquote(raw_key)
        return self._serve(
            "lookup",
            key,
            lambda slow_ms: self._lookup(authorization, key),
            stored=lambda: self._stored_charge(key),
        )

    def _serve_refund(
        self, authorization: str | None, raw_charge_key: str, key: str | None, raw_body: bytes
    ) -> _Response | None:
        """The answer to a refund request (faults keyed by the refund's key), or None to drop it."""
        charge_key = unquote(raw_charge_key)
        if key:
            with self._lock:
                self._refund_requests_by_key[key] = self._refund_requests_by_key.get(key, 0) + 1
        answer = self._serve(
            "refund",
            key,
            lambda slow_ms: self._refund(authorization, charge_key, key, raw_body, slow_ms=slow_ms),
            stored=lambda: self._stored_refund(key) if key else None,
        )
        self._announce_refunds()
        return answer

    def _serve_refund_lookup(
        self, authorization: str | None, raw_charge_key: str, raw_refund_key: str
    ) -> _Response | None:
        """The answer to a refund lookup, or None to close the connection without one."""
        charge_key, key = unquote(raw_charge_key), unquote(raw_refund_key)
        return self._serve(
            "refund_lookup",
            key,
            lambda slow_ms: self._refund_lookup(authorization, charge_key, key),
            stored=lambda: self._stored_refund(key),
        )

    def _note_modifier(self, on: str, key: str, fault: Fault) -> None:
        """A fault that changes what this key's request does (see MODIFIER_KINDS)."""
        with self._lock:
            if fault.kind == "delayed_commit" and on == "refund":
                self._refund_commit_delays_ms[key] = fault.ms or 0
            elif fault.kind == "delayed_commit":
                self._commit_delays_ms[key] = fault.ms or 0
            elif fault.kind == "refund_pending":
                self._refund_modes[key] = _RefundMode("pending", fault.ms or 0, fault.variant or "succeeded")
            elif fault.kind == "refund_failed":
                self._refund_modes[key] = _RefundMode("failed")

    def _serve(
        self,
        on: str,
        key: str | None,
        act: Callable[[int], _Response],
        *,
        stored: Callable[[], JsonObject | None],
    ) -> _Response | None:
        """`act(slow_ms)` under the next matching fault, if any; None means drop the connection.
        `stored()` is the record the request stands for (a charge or a refund), if any."""
        fault = self._take_fault(on, key)
        while fault is not None and fault.kind in MODIFIER_KINDS:
            # Not an answer of its own: it changes what the request does (when lookups see the
            # record, how a refund ends), and the request goes on under the next matching fault.
            if key:
                self._note_modifier(on, key, fault)
            fault = self._take_fault(on, key)
        if fault is None:
            return act(0)
        if fault.kind == "drop_before":
            return None
        if fault.kind == "status":
            return _status_error(fault.status or 500, fault.retry_after)
        if fault.kind == "proxy_404":
            return _proxy_404()
        if fault.kind == "redirect":
            return _redirect(fault.location or REDIRECT_LOCATION)
        response = act((fault.ms or 0) if fault.kind == "slow" else 0)
        if fault.kind == "drop_after":
            return None
        if fault.kind == "hold":
            self._wait_ms(fault.ms or 0)
        if fault.kind == "other_charge":
            return _other_charge(fault.variant or "all", stored())
        if fault.kind == "other_refund":
            return other_refund(fault.variant or "all", stored())
        if fault.kind == "trickle":
            return dataclasses.replace(response, trickle_ms=fault.ms or 1)
        if fault.kind == "garbage":
            record = stored()
            base = record if record is not None else response.body
            return _garbage(fault.variant or "not_json", base if isinstance(base, dict) else {})
        return response

    def _authorized(self, authorization: str | None) -> bool:
        expected = f"Bearer {self.api_key}".encode()
        return secrets.compare_digest((authorization or "").encode(), expected)

    def _simulate_latency(self, extra_ms: int = 0) -> None:
        self._wait_ms(self.latency_ms + random.uniform(0, self.jitter_ms) + extra_ms)

    def _hold_if_timing_out(self, state: _KeyState, arrived_at: float) -> None:
        # The charge is already made; holding the answer is what makes the outcome unknown to a
        # client whose read timeout is shorter than the window. stop() wakes the wait.
        if state.request.source != "tok_timeout":
            return
        window_ends_at = state.first_attempt_at + self.timeout_window_s
        if arrived_at < window_ends_at:
            self._stopping.wait(max(0.0, window_ends_at - time.monotonic()))

    def _charge(
        self, authorization: str | None, key: str | None, raw_body: bytes, *, slow_ms: int = 0
    ) -> _Response:
        arrived_at = time.monotonic()
        if not self._authorized(authorization):
            return _unauthorized()
        if not key:
            return _invalid_request("The Idempotency-Key header is required.")
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            return _invalid_request("The Idempotency-Key header is too long.")
        try:
            request = _parse_charge_request(raw_body)
        except _InvalidRequestError as exc:
            return _invalid_request(str(exc))

        with self._lock:
            state = self._keys.setdefault(key, _KeyState(request, first_attempt_at=arrived_at))
            if state.request.fingerprint != request.fingerprint:
                message = "This idempotency key was already used with a different request body."
                return _error(400, "idempotency_error", message, code="key_reused")
            replay = state.result
            if replay is None:
                if state.in_progress:
                    return _status_error(409)
                state.in_progress = True
                state.attempts += 1

        if replay is not None:
            self._simulate_latency(slow_ms)
            self._hold_if_timing_out(state, arrived_at)
            return _Response(replay.status, replay.body, (("Idempotent-Replayed", "true"),))

        # This request owns the key until in_progress is cleared, so state.attempts is stable.
        self._simulate_latency(slow_ms)
        response, charge = _decide(request, state.attempts, key)
        with self._lock:
            # Storing and releasing together: a retry must see either "in progress" or the result.
            # Only final answers are stored; a 429 or 5xx leaves the key free to be retried.
            if response.status in FINAL_STATUSES:
                state.result, state.charge = response, charge
                delay_ms = self._commit_delays_ms.pop(key, 0)
                state.visible_at = time.monotonic() + delay_ms / 1000
                state.committed_at = time.time() + delay_ms / 1000
            state.in_progress = False
        if response.status in FINAL_STATUSES and charge is not None:
            self._emit("charge", dict(charge), key, request.currency)
        self._hold_if_timing_out(state, arrived_at)
        return response

    def _lookup(self, authorization: str | None, key: str) -> _Response:
        if not self._authorized(authorization):
            return _unauthorized()
        with self._lock:
            state = self._keys.get(key)
            charge = state.charge if state is not None else None
            committed = state is not None and time.monotonic() >= state.visible_at
        if charge is None or not committed:
            return _status_error(404)
        return _Response(200, charge)

    def _settle_due_locked(self) -> None:
        """Settle every pending refund whose time has come (the caller holds the lock)."""
        now = time.monotonic()
        for state in self._refunds.values():
            state.settle(now)

    def _refunded_locked(self, charge_key: str) -> int:
        return sum(
            state.request.amount
            for state in self._refunds.values()
            if state.request.charge_key == charge_key and state.counted()
        )

    def _stored_refund(self, key: str) -> JsonObject | None:
        with self._lock:
            state = self._refunds.get(key)
            if state is None or state.refund is None:
                return None
            state.settle(time.monotonic())
            return dict(state.refund)

    def _refusal_locked(self, charge_key: str, amount: int) -> _Response | None:
        """Why a new refund of `amount` cannot be made on this charge, or None (lock held)."""
        charge_state = self._keys.get(charge_key)
        charge = charge_state.charge if charge_state is not None else None
        if charge_state is None or charge is None or time.monotonic() < charge_state.visible_at:
            return _status_error(404)  # resource_missing: no charge with this key (yet)
        if charge.get("status") != "succeeded":
            return refusal("charge_not_refundable", "Only a succeeded charge can be refunded.")
        self._settle_due_locked()
        left = int(charge["amount"]) - self._refunded_locked(charge_key)
        if amount > left:
            message = f"Refund amount {amount} is more than what is left of the charge ({left})."
            return refusal("amount_exceeds_remaining", message)
        return None

    def _refund(
        self,
        authorization: str | None,
        charge_key: str,
        key: str | None,
        raw_body: bytes,
        *,
        slow_ms: int = 0,
    ) -> _Response:
        if not self._authorized(authorization):
            return _unauthorized()
        if not key:
            return _invalid_request("The Idempotency-Key header is required.")
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            return _invalid_request("The Idempotency-Key header is too long.")
        try:
            request = parse_refund_request(charge_key, raw_body)
        except _InvalidRequestError as exc:
            return _invalid_request(str(exc))

        with self._lock:
            state = self._refunds.get(key)
            if state is not None and state.request.fingerprint != request.fingerprint:
                message = "This idempotency key was already used with a different request body."
                return _error(400, "idempotency_error", message, code="key_reused")
            if state is not None and state.in_progress:
                return _status_error(409)
            if state is not None and state.refund is not None:
                state.settle(time.monotonic())
                replay = dict(state.refund)
            else:
                # Refused requests keep nothing: the same key may be sent again once it can be made.
                refused = self._refusal_locked(charge_key, request.amount)
                if refused is not None:
                    return refused
                state = self._refunds[key] = _RefundState(request, in_progress=True)
                replay = None
                charge = dict(self._keys[charge_key].charge or {})

        self._simulate_latency(slow_ms)
        if replay is not None:
            return _Response(200, replay, (("Idempotent-Replayed", "true"),))
        with self._lock:
            # Made and released together: a retry sees either "in progress" or the refund.
            now = time.monotonic()
            make_refund(state, charge, self._refund_modes.pop(key, None), now)
            state.visible_at = now + self._refund_commit_delays_ms.pop(key, 0) / 1000
            state.in_progress = False
            return _Response(200, dict(state.refund or {}))

    def _refund_lookup(self, authorization: str | None, charge_key: str, key: str) -> _Response:
        if not self._authorized(authorization):
            return _unauthorized()
        with self._lock:
            state = self._refunds.get(key)
            now = time.monotonic()
            if state is None or state.refund is None or state.request.charge_key != charge_key:
                return no_such_refund()
            if now < state.visible_at:
                return no_such_refund()
            state.settle(now)
            return _Response(200, dict(state.refund))

    def _refunds_answer(self) -> _Response:
        ledger = self.refund_ledger()
        return _Response(200, {"total": self.total_refunds(), "by_charge": ledger})

    def _settle_refund_answer(self, raw_body: bytes) -> _Response:
        try:
            body = _parse_json_object(raw_body)
            key, status = body.get("refund_key"), body.get("status")
            if not isinstance(key, str) or not key or set(body) - {"refund_key", "status"}:
                raise _InvalidRequestError('Body must be {"refund_key": "...", "status": optional}.')
            settled = self.settle_refund(key, status)
        except (_InvalidRequestError, ValueError) as exc:
            return _invalid_request(str(exc))
        if settled is None:
            return _invalid_request("No pending refund with this idempotency key.", status=404)
        return _Response(200, settled)

    def _charge_counts(self) -> _Response:
        with self._lock:
            by_key = {key: int(state.charged) for key, state in self._keys.items()}
        return _Response(200, {"total": sum(by_key.values()), "by_key": by_key})

    def _ledger_answer(self) -> _Response:
        by_key = self.ledger()
        return _Response(200, {"total": len(by_key), "by_key": by_key, "committed_at": self.committed_at()})

    def _faults_answer(self, method: str, raw_body: bytes) -> _Response:
        if method == "POST":
            try:
                faults = _parse_json_object(raw_body).get("faults")
                if not isinstance(faults, list):
                    raise _InvalidRequestError('Body must be {"faults": [...]}.')
                self.inject_many(faults)
            except (_InvalidRequestError, TypeError) as exc:
                return _invalid_request(str(exc))
        elif method == "DELETE":
            self.clear_faults()
        with self._lock:
            pending = [fault.to_dict() for fault in self._faults]
            applied = [list(entry) for entry in self._faults_applied]
        return _Response(200, {"pending": pending, "applied": applied})
