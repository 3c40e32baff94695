"""Model-based test of the exactly-once promise, with faults injected at every step.

Hypothesis drives random sequences of what callers, support and the scheduled commands do,
over real HTTP (Django's live server) against the fake provider and the real database (MariaDB
in CI), while injecting provider faults (held answers, requests still in flight, dropped
connections, 5xx, 429, 409, garbage answers, answers trickled past the deadline, proxies' HTML
404s and redirects, charges that lookups see only later, answers for another amount or key),
database faults (before the insert, during
settle) and crashes (a request stopped between the provider call and settle, as a killed
process would be). After every step, and at quiescence (faults off, the in-flight window
passed, reconcile_payments run with the provider healthy), it checks:

- I1 at most one provider charge per payment (per client idempotency key);
- I2 every provider charge ends recorded as succeeded, with its charge id;
- I3 no answer said "not charged" (402, 422, 502, 503, 409 canceled/reused) for a payment the
  provider charged through that try, and no "nothing kept" answer left a row behind;
- I4 no transaction is canceled while the provider holds a charge for it;
- I5 nothing stays pending or unknown once reconcile has run with the provider reachable;
- I6 two different keys (even differing only in case) are two payments;
- I7 at quiescence no row's state contradicts the provider (a success only where it charged).

Faults of the process and of time too: a reconcile paused past its claim's window while
another process takes the row over (it must write nothing but facts), and reconcile runs on a
host whose clock is 10 s ahead or behind the database's.

CI runs a bounded number of examples (MODEL_MAX_EXAMPLES, default 10, of MODEL_STEPS 10 steps);
`make soak` runs many
more with a random seed and prints the seed, steps, faults and violations. A failure prints
Hypothesis's minimal sequence of steps, which is the reproduction.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError, connection
from django.utils import timezone
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fakeprovider import FakeProvider
from payments import failpoints, provider
from payments.models import PaymentAttempt, Transaction

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MAX_EXAMPLES = int(os.environ.get("MODEL_MAX_EXAMPLES", "10"))
STEPS = int(os.environ.get("MODEL_STEPS", "10"))
SEED = os.environ.get("MODEL_SEED")
READ_TIMEOUT_MS = 150
RECONCILE_AFTER_S = 1  # > deadline 600 + connect 150 + read 150 ms; the provider's delays stay below it
KEYS = ["order-Ab", "order-aB", "order-1", None]
TOKENS = ["tok_visa", "tok_visa", "tok_chargeDeclined", "tok_error"]
NOT_CHARGED_STATUSES = {402, 422, 502, 503}
PROVIDER_FAULTS = [
    None,
    {"kind": "hold", "ms": 400},  # charged, answer after our read timeout
    {"kind": "slow", "ms": 400},  # still processing: our retries get 409, lookups 404
    {"kind": "drop_after"},  # charged (or declined), connection dropped
    {"kind": "drop_before"},  # not processed, connection dropped
    {"kind": "status", "status": 503},
    {"kind": "status", "status": 500},
    {"kind": "status", "status": 429, "retry_after": 0},
    {"kind": "status", "status": 409},
    {"kind": "garbage", "variant": "long_id"},
    {"kind": "garbage", "variant": "deep_json"},
    {"kind": "garbage", "variant": "bad_status"},
    {"kind": "trickle", "ms": 40},  # charged, the answer a byte at a time past any deadline
    {"kind": "proxy_404"},  # a proxy's HTML 404: not the provider's word
    {"kind": "redirect"},  # a 302 elsewhere: never followed, never proof
    {"kind": "delayed_commit", "ms": 300},  # lookups see the charge only 300 ms after it was sent
    {"kind": "other_charge", "variant": "amount"},  # charged, but the answer is for 1 unit
    {"kind": "other_charge", "variant": "key"},  # charged, but the answer is another key's
]
LOOKUP_FAULTS = [
    None,
    {"kind": "status", "status": 503, "on": "lookup"},
    {"kind": "proxy_404", "on": "lookup"},
    {"kind": "redirect", "on": "lookup"},
    {"kind": "trickle", "ms": 40, "on": "lookup"},
    {"kind": "other_charge", "variant": "all", "on": "lookup"},
]
SERVICE_FAULTS = [None, "db_before_insert", "db_settle", "crash_before_call", "crash_after_call"]


@dataclass
class Answer:
    key: str | None
    http_status: int | None  # None: the connection dropped, no answer
    body: dict[str, Any]
    new_rows: set[str] = field(default_factory=set)

    @property
    def is_error(self) -> bool:
        return isinstance(self.body.get("error"), dict) and "transaction" in self.body

    @property
    def txn(self) -> dict[str, Any] | None:
        return self.body.get("transaction") if self.is_error else (self.body or None)

    @property
    def code(self) -> str:
        if self.http_status is None:
            return "dropped"
        return self.body["error"]["code"] if self.is_error else "ok"


@dataclass
class Report:
    runs: int = 0
    steps: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)


REPORT = Report()


def _raise_db_error() -> None:
    raise OperationalError("injected: database connection lost")


def _crash() -> None:
    raise failpoints.SimulatedCrash()


class PaymentsMachine(RuleBasedStateMachine):
    live_url: str
    token: str
    provider: FakeProvider

    def __init__(self) -> None:
        super().__init__()
        PaymentAttempt.objects.all().delete()
        Transaction.objects.all().delete()
        self.provider.reset()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {self.token}"
        self.answers: list[Answer] = []
        self.crashing = False
        REPORT.runs += 1

    # Steps ------------------------------------------------------------------------

    def _post(self, path: str, *, key: str | None = None, json: Any = None) -> tuple[int | None, dict]:
        headers = {"Idempotency-Key": key} if key is not None else {}
        try:
            response = self.session.post(f"{self.live_url}{path}", json=json, headers=headers, timeout=10)
        except requests.ConnectionError:
            return None, {}
        try:
            return response.status_code, response.json()
        except ValueError:
            # Only a request stopped by an injected crash may end without the API's JSON: the live
            # server's WSGI handler answers a bare 500 where a killed process would drop the line.
            assert self.crashing, f"{path} answered {response.status_code} with a body that is not JSON"
            return None, {}

    def _rows_for(self, key: str | None) -> set[str]:
        """The rows a request with this key could touch (every row for a request without a key:
        steps run one at a time, so any new row is that request's)."""
        rows = Transaction.objects.all() if key is None else Transaction.objects.filter(idempotency_key=key)
        return {str(pk) for pk in rows.values_list("pk", flat=True)}

    @rule(
        key=st.sampled_from(KEYS),
        token=st.sampled_from(TOKENS),
        provider_faults=st.lists(st.sampled_from(PROVIDER_FAULTS), max_size=3),
        service_fault=st.sampled_from(SERVICE_FAULTS),
    )
    def charge(self, key: str | None, token: str, provider_faults: list, service_fault: str | None) -> None:
        REPORT.steps += 1
        faults = [fault for fault in provider_faults if fault]
        self.provider.inject_many(faults)
        REPORT.faults.update(f"{f['kind']}:{f.get('status') or f.get('variant') or ''}" for f in faults)
        before = self._rows_for(key)
        point, action = {
            "db_before_insert": ("charge.before_insert", _raise_db_error),
            "db_settle": ("settle", _raise_db_error),
            "crash_before_call": ("charge.before_call", failpoints.once(_crash)),
            "crash_after_call": ("charge.after_call", failpoints.once(_crash)),
        }.get(service_fault or "", (None, None))
        if service_fault:
            REPORT.faults[service_fault] += 1
        body = {"amount": 1999, "currency": "USD", "source": token, "description": "model"}
        if point:
            self.crashing = service_fault.startswith("crash")
            with failpoints.armed(point, action):
                status, answer = self._post("/api/v1/charges", key=key, json=body)
            self.crashing = False
        else:
            status, answer = self._post("/api/v1/charges", key=key, json=body)
        self.provider.clear_faults()
        recorded = Answer(key, status, answer, self._rows_for(key) - before)
        self.answers.append(recorded)
        REPORT.answers[f"{status} {recorded.code}"] += 1
        self._check_answer(recorded)

    @rule(key=st.sampled_from([k for k in KEYS if k]))
    def concurrent_same_key(self, key: str) -> None:
        REPORT.steps += 1
        results: list[tuple[int | None, dict]] = []
        body = {"amount": 1999, "currency": "USD", "source": "tok_visa", "description": "model"}
        self.provider.inject({"kind": "slow", "ms": 100})
        threads = [
            threading.Thread(target=lambda: results.append(self._post("/api/v1/charges", key=key, json=body)))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.provider.clear_faults()
        for status, answer in results:
            recorded = Answer(key, status, answer)
            self.answers.append(recorded)
            self._check_answer(recorded)

    @rule(lookup_fault=st.sampled_from(LOOKUP_FAULTS))
    def reconcile(self, lookup_fault: dict | None) -> None:
        REPORT.steps += 1
        if lookup_fault:
            self.provider.inject(lookup_fault)
            REPORT.faults[f"lookup:{lookup_fault['kind']}"] += 1
        _run_command("reconcile_payments")
        self.provider.clear_faults()

    @rule()
    def retry_command(self) -> None:
        REPORT.steps += 1
        Transaction.objects.filter(status=Transaction.Status.FAILED).update(next_retry_at=timezone.now())
        _run_command("retry_failed_payments")

    @precondition(lambda self: Transaction.objects.exists())
    @rule(data=st.data(), how=st.sampled_from(["support_cancel", "client_cancel", "support_retry"]))
    def support_or_client_action(self, data: st.DataObject, how: str) -> None:
        REPORT.steps += 1
        ids = sorted(str(pk) for pk in Transaction.objects.values_list("pk", flat=True))
        txn_id = data.draw(st.sampled_from(ids))
        if how == "client_cancel":
            status, _ = self._post(f"/api/v1/charges/{txn_id}/cancel")
            assert status in (200, 409), f"cancel answered {status}"
        elif how == "support_cancel":
            from payments import services
            from payments.errors import PaymentError

            with contextlib.suppress(PaymentError):
                services.charge_cancel(transaction_id=txn_id, reason="model", actor="support")
        else:
            from payments import services

            services.charge_retry(transaction_id=txn_id, actor="support")

    @rule(data=st.data(), takeover=st.sampled_from(["client", "reconcile"]))
    def paused_reconcile(self, data: st.DataObject, takeover: str) -> None:
        """A reconcile claims a row and freezes (a paused VM, a long GC pause) past the window;
        another process takes the row over; the frozen one resumes with what it saw before."""
        from payments.services import claims, support
        from payments.transitions import Actor

        REPORT.steps += 1
        REPORT.faults[f"pause:{takeover}"] += 1
        if not Transaction.objects.filter(status="unknown").exists():
            # A charge whose answer comes after our read timeout leaves one unknown.
            self.charge(data.draw(st.sampled_from(KEYS)), "tok_visa", [{"kind": "hold", "ms": 400}], None)
        if not Transaction.objects.filter(status="unknown").exists():
            return
        ids = sorted(
            str(pk) for pk in Transaction.objects.filter(status="unknown").values_list("pk", flat=True)
        )
        txn = Transaction.objects.get(pk=data.draw(st.sampled_from(ids)))
        paused = claims.claim(Transaction.objects.filter(pk=txn.pk), by=Actor.RECONCILE)
        if paused is None:
            return
        lookup = provider.get_client().lookup(provider_key=paused.provider_idempotency_key)
        time.sleep(RECONCILE_AFTER_S + 0.3)  # frozen: its claim expires
        if takeover == "client" and txn.idempotency_key and txn.source:
            body = {
                "amount": txn.amount,
                "currency": txn.currency,
                "source": txn.source,
                "description": "model",
            }
            status, answer = self._post("/api/v1/charges", key=txn.idempotency_key, json=body)
            recorded = Answer(txn.idempotency_key, status, answer)
            self.answers.append(recorded)
            self._check_answer(recorded)
        else:
            _run_command("reconcile_payments")
        # Resumes: the lookup it made before the pause, settled now.
        claims.isolated(
            paused,
            "paused reconcile",
            lambda claimed, actor: support.settle_lookup(claimed, lookup, actor=actor),
            by=Actor.RECONCILE,
        )
        connection.close()

    @rule(skew_s=st.sampled_from([-10, 10]))
    def reconcile_on_a_skewed_host(self, skew_s: int) -> None:
        """reconcile_payments on a host whose clock is off by `skew_s` against the database's."""
        REPORT.steps += 1
        REPORT.faults[f"clock_skew:{skew_s:+d}s"] += 1
        real_now = timezone.now
        with mock.patch("django.utils.timezone.now", lambda: real_now() + timedelta(seconds=skew_s)):
            _run_command("reconcile_payments")

    # Invariants ---------------------------------------------------------------------

    def _check_answer(self, answer: Answer) -> None:
        """I3 at answer time: a "nothing kept" 503 wrote no row."""
        if answer.http_status == 503 and answer.txn is None:
            assert not answer.new_rows, f"503 said nothing was kept, yet rows {answer.new_rows} were written"

    @invariant()
    def no_double_charge_and_no_canceled_charge(self) -> None:
        ledger = self.provider.ledger()
        rows = {t.provider_idempotency_key: t for t in Transaction.objects.all()}
        keys_charged: Counter[tuple[int, str]] = Counter()
        for provider_key in ledger:
            txn = rows.get(provider_key)
            assert txn is not None, f"the provider charged {provider_key}, which no transaction holds (I2)"
            assert txn.status != Transaction.Status.CANCELED, f"I4: {txn.pk} canceled but charged"
            assert txn.status != Transaction.Status.DECLINED, f"{txn.pk} declined but charged"
            if txn.idempotency_key:
                keys_charged[(txn.client_id, txn.idempotency_key)] += 1
        doubled = [key for key, count in keys_charged.items() if count > 1]
        assert not doubled, f"I1: keys charged more than once: {doubled}"
        for txn in rows.values():
            if txn.idempotency_key:
                assert Transaction.objects.filter(idempotency_key=txn.idempotency_key).count() == 1

    def teardown(self) -> None:
        try:
            self.quiesce()
        finally:
            self.session.close()

    def quiesce(self) -> None:
        """Faults off, the in-flight window passed, reconcile run with the provider healthy."""
        self.provider.clear_faults()
        time.sleep(RECONCILE_AFTER_S + 0.6)
        _run_command("reconcile_payments")
        ledger = self.provider.ledger()
        rows = {str(t.pk): t for t in Transaction.objects.all()}
        by_provider_key = {t.provider_idempotency_key: t for t in rows.values()}
        # I5
        stuck = [(pk, t.status) for pk, t in rows.items() if t.status in ("pending", "unknown")]
        assert not stuck, f"I5: still pending or unknown after reconcile: {stuck}"
        # I2
        for provider_key, charge in ledger.items():
            txn = by_provider_key[provider_key]
            assert (txn.status, txn.provider_charge_id) == ("succeeded", charge["id"]), f"I2: {txn.pk}"
        # I3: a not-charged answer was true for that try
        for answer in self.answers:
            row = answer.txn
            if answer.http_status in NOT_CHARGED_STATUSES and row:
                txn = rows.get(row["id"])
                if txn is None or txn.provider_idempotency_key not in ledger:
                    continue
                assert answer.http_status == 502 and txn.attempts > row["attempts"], (
                    f"I3: answered {answer.http_status} {answer.body['error']['code']} for {row['id']}, "
                    "which the provider charged through that very try"
                )
        # I7: no row's state contradicts the provider: a success only where it charged.
        for txn in rows.values():
            if txn.status == "succeeded":
                assert txn.provider_idempotency_key in ledger, f"I7: {txn.pk} succeeded, never charged"
        # I6: every key that got a transaction got its own, byte for byte.
        for answer in self.answers:
            row = answer.txn
            if answer.key and row and row.get("id") in rows:
                assert rows[row["id"]].idempotency_key == answer.key, f"I6: {answer.key!r} shared a payment"


def _run_command(name: str) -> None:
    try:
        call_command(name, "--json", stdout=io.StringIO(), stderr=io.StringIO())
    except CommandError as error:
        assert error.returncode == 1, f"{name} exited {error.returncode}: {error}"
    finally:
        connection.close()


def test_exactly_once_under_injected_faults(
    live_server: Any, fake_provider: FakeProvider, api_user_token: tuple[Any, str], settings: Any
) -> None:
    settings.PAYMENT_TIMEOUT_MS = READ_TIMEOUT_MS
    settings.PAYMENT_CONNECT_TIMEOUT_MS = 150
    settings.PAYMENT_DEADLINE_MS = 600
    settings.PAYMENT_MAX_RETRIES = 2
    settings.PAYMENT_RECONCILE_AFTER_S = RECONCILE_AFTER_S
    settings.PAYMENT_MAX_ATTEMPTS = 3
    fake_provider.timeout_window_s = 0.5
    PaymentsMachine.live_url = live_server.url
    PaymentsMachine.token = api_user_token[1]
    PaymentsMachine.provider = fake_provider
    _run()
    print(
        f"\nmodel: seed={SEED or 'derandomized'} runs={REPORT.runs} steps={REPORT.steps} "
        f"faults={dict(REPORT.faults)} answers={dict(REPORT.answers)} violations=0"
    )


def settings_for_run() -> settings:
    return settings(
        max_examples=MAX_EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        derandomize=SEED is None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        print_blob=True,
    )


def _run() -> None:
    # make soak: a random seed, printed so that a failing run can be repeated exactly.
    factory = PaymentsMachine if SEED is None else seed(int(SEED))(PaymentsMachine)
    run_state_machine_as_test(factory, settings=settings_for_run())
