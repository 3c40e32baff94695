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
- I10 at quiescence every settled payment has exactly one outbox event of its state
  (`charge.succeeded`, `charge.declined`, `charge.canceled`), whose object shows that state, and
  no event a row's history cannot have (a final state's event twice, or one for a state it never had).

Refunds are driven beside charges: full, partial (several per charge), more than is left,
with and without keys (same-key retries, keys differing in case), by the API client and by
support (`by=Actor.SUPPORT`), three at once with one key or with three keys, racing a
reconcile_refunds, and support canceling refunds not made; with the charges' faults on the
refund call (held, in flight, dropped after or before, 5xx, 429, 409, garbage, trickled,
proxy 404, redirect, seen by lookups only later, crashes before and after the call, database
errors during settle) and the refund's own (refund_pending, refund_failed, other_refund), on
its lookups too, paused reconciles and skewed clocks. It checks:

- I8 at quiescence (the window passed, the fake's pending refunds settled, reconcile_refunds
  run) the provider's refund ledger and the database agree: every provider refund is one
  Refund row's (none made twice, none without a row), each refund made is a succeeded row with
  its id (none lost), each succeeded row is a refund the provider made (none recorded that it
  did not make), and no refund stays pending or unknown;
- I9 at every step, per charge, neither the provider's refunds (succeeded and pending) nor the
  database's succeeded refunds exceed the charge, nor its succeeded, pending and unknown ones;
- I11 no refund answer said "not refunded" (402 refund_failed, 502 refund_not_sent, 503, 409
  not refundable or canceled, 422 too large) for a refund the provider made through that try,
  and none of them left a row behind when it named no refund.

Provider events and events out: the provider's signed event for a charge or refund the fake
settled, posted to the live server's /webhooks/provider; one sent before, sent again (the same
id and signature); a stale charge.declined / refund.failed after the row succeeded; forged
successes (another secret, ten minutes old, unsigned, another amount, a key of no row's);
endpoints on a loopback receiver or a closed port, going down and back, the resolver going
silent for their name and back (a registration or URL change meanwhile is refused and changes
nothing), and one pass of the delivery loop with the receiver answering 204 or 500. It checks:

- I12 per endpoint, every outbox event written since it was registered has one delivery,
  delivered or still scheduled (none given up); what it heard came in sequence order, signed
  with its secret, nothing answered 2xx came again; at quiescence an endpoint up has them all;
- I13 the provider's event of a success it made is recorded at once; a duplicate changes nothing;
- I14 a stale or forged event changes no status and writes no outbox event (at most a lookup).

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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError, connection
from django.db.models import F, Q, Sum
from django.db.models.functions import Coalesce
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
from fakeprovider.events import event_body
from payments import failpoints, provider
from payments.errors import InvalidRequest, PaymentError
from payments.models import (
    ClientEvent,
    EventDelivery,
    PaymentAttempt,
    ProviderEvent,
    Refund,
    Transaction,
    WebhookEndpoint,
)
from payments.services.client_events import EVENT_TYPES as CLIENT_EVENT_TYPES
from payments.transitions import Actor
from tests.support.deliveries import Heard, deliver_pass, heard
from tests.support.events import EVENTS_PATH, OTHER_SECRET, SECRET, post_event
from tests.support.network import HANGING_HOST, HangingResolver, closed_port
from tests.support.receiver import Receiver

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
# Which row a step works on: drawn with the step, whatever the rows are then (a draw shaped by
# the database would differ between runs of the same steps, which Hypothesis refuses).
PICK = st.integers(min_value=0, max_value=63)
SERVICE_FAULTS = [None, "db_before_insert", "db_settle", "crash_before_call", "crash_after_call"]
# Refunds: keys that differ only in case are two refunds; amounts all that is left (None), a
# part, the whole charge, more than it.
REFUND_KEYS = ["refund-Ab", "refund-aB", None]
REFUND_AMOUNTS = [None, 500, 1000, 1999, 2000]
REFUND_FAULTS = [
    None,
    {"kind": "hold", "ms": 400},  # refunded, answer after our read timeout
    {"kind": "slow", "ms": 400},  # still processing: our retries get 409, lookups 404
    {"kind": "drop_after"},  # refunded (or refused), connection dropped
    {"kind": "drop_before"},  # not processed, connection dropped
    {"kind": "status", "status": 503},
    {"kind": "status", "status": 500},
    {"kind": "status", "status": 429, "retry_after": 0},
    {"kind": "status", "status": 409},
    {"kind": "garbage", "variant": "long_id"},
    {"kind": "garbage", "variant": "deep_json"},
    {"kind": "garbage", "variant": "bad_status"},
    {"kind": "trickle", "ms": 40},
    {"kind": "proxy_404"},
    {"kind": "redirect"},
    {"kind": "delayed_commit", "ms": 300},  # lookups see the refund only 300 ms after it was made
    {"kind": "other_refund", "variant": "amount"},  # refunded, but the answer is for 1 unit
    {"kind": "other_refund", "variant": "charge"},  # refunded, but the answer is another charge's
    {"kind": "refund_pending", "ms": 0},  # pending, settled at once
    {"kind": "refund_pending", "ms": 200},  # held by the provider, succeeds 200 ms later
    {"kind": "refund_pending", "ms": 60_000, "variant": "failed"},  # held; fails (at quiescence)
    {"kind": "refund_failed"},  # the provider refuses it: failed, final
]
REFUND_LOOKUP_FAULTS = [
    None,
    {"kind": "status", "status": 503},
    {"kind": "hold", "ms": 400},
    {"kind": "drop_before"},
    {"kind": "garbage", "variant": "bad_status"},
    {"kind": "proxy_404"},
    {"kind": "redirect"},
    {"kind": "trickle", "ms": 40},
    {"kind": "other_refund", "variant": "all"},
]
# A refund in flight while reconcile_refunds runs: its answer late, lost, a 5xx, or held.
RACING_FAULTS = [
    {"kind": "slow", "ms": 250},
    {"kind": "hold", "ms": 250},
    {"kind": "drop_after"},
    {"kind": "status", "status": 500},
    {"kind": "refund_pending", "ms": 200},
]
REFUND_SERVICE_FAULTS = [None, "db_before_insert", "db_settle", "crash_before_call", "crash_after_call"]
# The answers that say "not refunded": refund_failed (402), refund_not_sent (502), nothing kept
# (503: refund_unavailable, database_busy), too large (422); on 409, not refundable and canceled.
NOT_REFUNDED_STATUSES = {402, 422, 502, 503}
NOT_REFUNDED_409_TYPES = {"invalid_request", "refund_canceled"}
NOT_REFUNDED_NAMES = {
    "refund_failed",
    "refund_not_sent",
    "refund_unavailable",
    "not_refundable",
    "refund_too_large",
    "refund_canceled",
    "database_busy",
    "database_unavailable",
}


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
EVENT_TYPES = list(CLIENT_EVENT_TYPES)


@dataclass
class Hook:
    """A client's endpoint in the model: its receiver path, the outbox's events before it was
    registered (never its), and whether its host is down now."""

    path: str
    before: set[str]
    down: bool


@dataclass
class RefundAnswer:
    """One refund request's answer: by the API (an HTTP status and body) or by the service
    (support: the refund, or the PaymentError's answer name)."""

    key: str | None
    http_status: int | None  # None: the connection dropped, or the request was stopped
    name: str  # the answer: "ok" (201/202), "dropped", or the error's type/code or answer name
    not_refunded: bool
    # The refund the answer names, as it named it: (id, attempts).
    refund: tuple[str, int] | None
    # The key's refund row just after the answer (a keyed request), as (id, attempts).
    key_row: tuple[str, int] | None = None
    # Rows written by this request; None: unknown (concurrent requests).
    new_rows: set[str] | None = None


def _raise_db_error() -> None:
    raise OperationalError("injected: database connection lost")


def _crash() -> None:
    raise failpoints.SimulatedCrash()


class PaymentsMachine(RuleBasedStateMachine):
    live_url: str
    token: str
    provider: FakeProvider
    user: Any
    receiver: Receiver
    down_port: int
    resolver: HangingResolver

    def __init__(self) -> None:
        super().__init__()
        PaymentAttempt.objects.all().delete()
        ProviderEvent.objects.all().delete()
        WebhookEndpoint.objects.all().delete()  # with its deliveries
        EventDelivery.objects.all().delete()
        ClientEvent.objects.all().delete()  # the outbox's events point at their charges and refunds
        Refund.objects.all().delete()
        Transaction.objects.all().delete()
        self.provider.reset()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {self.token}"
        self.answers: list[Answer] = []
        self.refund_answers: list[RefundAnswer] = []
        # A refund key's first request, (charge id, amount): what a same-key retry sends again.
        self.refund_requests: dict[str, tuple[str, int | None]] = {}
        self.crashing = False
        # Provider events sent: (body, webhook-id, timestamp, secret; "" unsigned), for duplicates.
        self.events_sent: list[tuple[dict, str, int, str]] = []
        self.endpoints: dict[str, Hook] = {}
        self.heard: list[Heard] = []
        self.receiver.requests.clear()
        self.resolver.release()
        self.silent = False  # the endpoints' name gets no answer from the resolver
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
    @rule(pick=PICK, how=st.sampled_from(["support_cancel", "client_cancel", "support_retry"]))
    def support_or_client_action(self, pick: int, how: str) -> None:
        REPORT.steps += 1
        ids = sorted(str(pk) for pk in Transaction.objects.values_list("pk", flat=True))
        txn_id = _pick(ids, pick)
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

    @rule(
        pick=PICK,
        key=st.sampled_from(KEYS),
        refund_key=st.sampled_from(REFUND_KEYS),
        takeover=st.sampled_from(["client", "reconcile"]),
        what=st.sampled_from(["charge", "refund"]),
    )
    def paused_reconcile(
        self, pick: int, key: str | None, refund_key: str | None, takeover: str, what: str
    ) -> None:
        """A reconcile claims a row and freezes (a paused VM, a long GC pause) past the window;
        another process takes the row over; the frozen one resumes with what it saw before.
        (One rule for charges and refunds: each pause costs the window.)"""
        from payments.services import claims, support

        REPORT.steps += 1
        if what == "refund":
            self._paused_refund_reconcile(pick, refund_key, takeover)
            return
        REPORT.faults[f"pause:{takeover}"] += 1
        if not Transaction.objects.filter(status="unknown").exists():
            # A charge whose answer comes after our read timeout leaves one unknown.
            self.charge(key, "tok_visa", [{"kind": "hold", "ms": 400}], None)
        if not Transaction.objects.filter(status="unknown").exists():
            return
        ids = sorted(
            str(pk) for pk in Transaction.objects.filter(status="unknown").values_list("pk", flat=True)
        )
        txn = Transaction.objects.get(pk=_pick(ids, pick))
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
            _run_command("reconcile_refunds")

    # Refund steps ------------------------------------------------------------------

    def _charge_to_refund(self, pick: int, which: str) -> str | None:
        """A succeeded charge with something left to refund (one is made if there is none), or
        with `which` "any" any charge (refunding one not succeeded, or all refunded, is refused)."""
        if which == "succeeded":
            counted = Sum("refunds__amount", filter=Q(refunds__status__in=Refund.COUNTED_STATUSES))
            rows = Transaction.objects.filter(status=Transaction.Status.SUCCEEDED)
            rows = rows.annotate(counted=Coalesce(counted, 0)).filter(counted__lt=F("amount"))
            if not rows.exists():
                self.charge(None, "tok_visa", [], None)
        else:
            rows = Transaction.objects.all()
        ids = sorted(str(pk) for pk in rows.values_list("pk", flat=True))
        return _pick(ids, pick) if ids else None

    def _refund_rows(self, key: str | None) -> set[str]:
        rows = Refund.objects.all() if key is None else Refund.objects.filter(idempotency_key=key)
        return {str(pk) for pk in rows.values_list("pk", flat=True)}

    def _key_row(self, key: str | None) -> tuple[str, int] | None:
        row = (
            Refund.objects.filter(idempotency_key=key).values_list("pk", "attempts").first() if key else None
        )
        return (str(row[0]), row[1]) if row else None

    def _refund_over_http(self, charge_id: str, key: str | None, amount: int | None) -> RefundAnswer:
        body: dict[str, Any] = {"reason": "requested_by_customer", "note": "model"}
        if amount is not None:
            body["amount"] = amount
        status, answer = self._post(f"/api/v1/charges/{charge_id}/refunds", key=key, json=body)
        error = answer.get("error") if isinstance(answer.get("error"), dict) else None
        named = answer.get("refund") if error else answer
        refund = (str(named["id"]), int(named["attempts"])) if named else None
        if status is None:
            name, not_refunded = "dropped", False
        elif error is None:
            name, not_refunded = "ok", False
        else:
            name = f"{error['type']}/{error['code']}"
            not_refunded = status in NOT_REFUNDED_STATUSES or (
                status == 409 and error["type"] in NOT_REFUNDED_409_TYPES
            )
        return RefundAnswer(key, status, name, not_refunded, refund)

    def _refund_by_support(self, charge_id: str, amount: int | None) -> RefundAnswer:
        """Support's refund (the admin's Refund…): the service with by=Actor.SUPPORT, no key."""
        from payments import services

        client = Transaction.objects.get(pk=charge_id).client
        request = services.RefundRequest(reason="requested_by_customer", amount=amount, note="model")
        refund: Refund | None
        try:
            refund = services.refund_create(
                charge_id=charge_id,
                client=client,
                request=request,
                idempotency_key=None,
                by=Actor.SUPPORT,
                requested_by="support model",
            ).refund
            name = "ok"
        except PaymentError as error:
            refund, name = error.refund, error.answer_name
        except OperationalError:  # the API answers it 503 database_unavailable: nothing kept
            refund, name = None, "database_unavailable"
        except failpoints.SimulatedCrash:
            refund, name = None, "dropped"
        finally:
            connection.close()
        named = (str(refund.pk), refund.attempts) if refund is not None and refund.pk else None
        return RefundAnswer(None, None, name, name in NOT_REFUNDED_NAMES, named)

    @rule(
        pick=PICK,
        which=st.sampled_from(["succeeded", "succeeded", "succeeded", "any"]),
        by=st.sampled_from(["client", "client", "support"]),
        key=st.sampled_from(REFUND_KEYS),
        amount=st.sampled_from(REFUND_AMOUNTS),
        provider_faults=st.lists(st.sampled_from(REFUND_FAULTS), max_size=3),
        service_fault=st.sampled_from(REFUND_SERVICE_FAULTS),
    )
    def refund(
        self,
        pick: int,
        which: str,
        by: str,
        key: str | None,
        amount: int | None,
        provider_faults: list,
        service_fault: str | None,
    ) -> None:
        """A refund, full or partial, by the API client (with or without a key; a used key
        retries its first request as it was) or by support."""
        REPORT.steps += 1
        if by == "client" and key in self.refund_requests:
            charge_id, amount = self.refund_requests[key]
        else:
            charge_id = self._charge_to_refund(pick, which)
        if charge_id is None:
            return
        faults = [{**fault, "on": "refund"} for fault in provider_faults if fault]
        self.provider.inject_many(faults)
        REPORT.faults.update(
            f"refund:{f['kind']}:{f.get('status') or f.get('variant') or ''}" for f in faults
        )
        point, action = {
            "db_before_insert": ("refund.before_insert", _raise_db_error),
            "db_settle": ("refund.settle", _raise_db_error),
            "crash_before_call": ("refund.before_call", failpoints.once(_crash)),
            "crash_after_call": ("refund.after_call", failpoints.once(_crash)),
        }.get(service_fault or "", (None, None))
        if service_fault:
            REPORT.faults[f"refund:{service_fault}"] += 1
        key = key if by == "client" else None
        before = self._refund_rows(key)
        with contextlib.ExitStack() as stack:
            if point:
                stack.enter_context(failpoints.armed(point, action))
                self.crashing = service_fault.startswith("crash")
            if by == "client":
                recorded = self._refund_over_http(charge_id, key, amount)
            else:
                recorded = self._refund_by_support(charge_id, amount)
            self.crashing = False
        self.provider.clear_faults()
        recorded.new_rows = self._refund_rows(key) - before
        recorded.key_row = self._key_row(key)
        if key and recorded.key_row:
            self.refund_requests.setdefault(key, (charge_id, amount))
        self._record_refund_answer(recorded, by=by)

    @rule(
        pick=PICK,
        key=st.sampled_from([k for k in REFUND_KEYS if k] + [None]),
        racing=st.sampled_from([None, None, *RACING_FAULTS]),
    )
    def concurrent_refunds(self, pick: int, key: str | None, racing: dict | None) -> None:
        """Three refunds of one charge at once: with one key (one refund, the others in flight
        or replayed), or with no key, 800 each (three are more than the charge: at most two).
        Or (`racing`) one refund in flight, its answer late, lost or a 5xx, while
        reconcile_refunds runs again and again. (One rule: each costs a refund call's time.)"""
        REPORT.steps += 1
        if racing is None and key in self.refund_requests:
            charge_id, amount = self.refund_requests[key]
        else:
            charge_id, amount = self._charge_to_refund(pick, "succeeded"), 800 if racing is None else 300
        if charge_id is None:
            return
        results: list[RefundAnswer] = []
        if racing is None:
            REPORT.faults["refund:concurrent:" + ("same_key" if key else "three_keys")] += 1
            self.provider.inject({"kind": "slow", "ms": 100, "on": "refund"})
            threads = [
                threading.Thread(
                    target=lambda: results.append(self._refund_over_http(charge_id, key, amount))
                )
                for _ in range(3)
            ]
        else:
            REPORT.faults[f"refund:racing_reconcile:{racing['kind']}"] += 1
            self.provider.inject_many([{**racing, "on": "refund"}, {"kind": "drop_after", "on": "refund"}])
            threads = [
                threading.Thread(
                    target=lambda: results.append(self._refund_over_http(charge_id, None, amount))
                )
            ]
        for thread in threads:
            thread.start()
        if racing is not None:
            _run_command("reconcile_refunds")
            while threads[0].is_alive():  # reconcile_refunds again and again while the refund is in flight
                time.sleep(0.05)
                _run_command("reconcile_refunds")
        for thread in threads:
            thread.join()
        self.provider.clear_faults()
        if racing is None and key and self._key_row(key):
            self.refund_requests.setdefault(key, (charge_id, amount))
        for recorded in results:
            self._record_refund_answer(recorded, by="client")

    @rule(lookup_fault=st.sampled_from(REFUND_LOOKUP_FAULTS))
    def reconcile_refunds(self, lookup_fault: dict | None) -> None:
        REPORT.steps += 1
        if lookup_fault:
            self.provider.inject({**lookup_fault, "on": "refund_lookup"})
            REPORT.faults[f"refund_lookup:{lookup_fault['kind']}"] += 1
        _run_command("reconcile_refunds")
        self.provider.clear_faults()

    @rule(pick=PICK)
    def support_cancels_a_refund(self, pick: int) -> None:
        """Support gives up on a refund (only one known not made may be)."""
        from payments import services

        REPORT.steps += 1
        ids = sorted(str(pk) for pk in Refund.objects.values_list("pk", flat=True))
        with contextlib.suppress(PaymentError):
            if ids:
                services.refund_cancel(refund_id=_pick(ids, pick), actor="support model")

    def _paused_refund_reconcile(self, pick: int, key: str | None, takeover: str) -> None:
        """A refund's reconcile looks it up and freezes past its claim's window; another process
        takes the refund over; the frozen one resumes and settles what it saw before. The pause
        is its claim aged past the window by the database's clock, which is all a pause that
        long leaves behind (the refund call's own start is left as it was)."""
        from payments import services

        REPORT.faults[f"refund:pause:{takeover}"] += 1
        if not Refund.objects.filter(status=Refund.Status.UNKNOWN).exists():
            # Every answer lost: the refund is unknown.
            drops = [{"kind": "drop_after"}] * 3
            self.refund(pick, "succeeded", "client", key, 100, drops, None)
        unknown = Refund.objects.filter(status=Refund.Status.UNKNOWN)
        ids = sorted(str(pk) for pk in unknown.values_list("pk", flat=True))
        if not ids:
            return
        row = Refund.objects.get(pk=_pick(ids, pick))
        client = provider.get_client()
        real_lookup = client.refund_lookup
        me, paused = threading.get_ident(), []

        def lookup_then_freeze(**kwargs: Any) -> provider.ProviderResult:
            result = real_lookup(**kwargs)
            if threading.get_ident() == me and not paused:
                paused.append(result)
                frozen_since = timezone.now() - timedelta(seconds=RECONCILE_AFTER_S + 0.3)
                Refund.objects.filter(pk=row.pk).update(claimed_at=frozen_since)  # its claim expired
                self._take_refund_over(row, takeover)
            return result

        with mock.patch.object(client, "refund_lookup", lookup_then_freeze):
            services.refund_reconcile(refund_id=row.pk, actor="paused reconcile")
        connection.close()

    def _take_refund_over(self, row: Refund, takeover: str) -> None:
        key = row.idempotency_key
        if takeover == "client" and key in self.refund_requests:
            charge_id, amount = self.refund_requests[key]
            recorded = self._refund_over_http(charge_id, key, amount)
            recorded.key_row = self._key_row(key)
            self._record_refund_answer(recorded, by="client")
        else:
            _run_command("reconcile_refunds")

    # Provider events in, and events out -----------------------------------------------

    def _snapshot(self) -> tuple[dict[str, str], dict[str, str], int]:
        """Every row's status and the outbox's size: what an event that must change nothing leaves."""
        charges = {str(pk): s for pk, s in Transaction.objects.values_list("pk", "status")}
        refunds = {str(pk): s for pk, s in Refund.objects.values_list("pk", "status")}
        return charges, refunds, ClientEvent.objects.count()

    def _send_event(self, body: dict, *, secret: str = SECRET, age_s: int = 0, signed: bool = True) -> Any:
        msg_id = f"msg_model_{len(self.events_sent)}"
        stamp = int(time.time()) - age_s
        url = self.live_url + EVENTS_PATH
        if signed:
            answer = post_event(url, body, msg_id=msg_id, timestamp=stamp, secret=secret)
        else:
            answer = requests.post(url, json=body, timeout=10)
        self.events_sent.append((body, msg_id, stamp, secret if signed else ""))
        REPORT.answers[f"event {body.get('type')} {answer.status_code}"] += 1
        return answer

    def _settled_at_provider(self, what: str) -> list[tuple[str, dict, str]]:
        """What the fake really settled: (kind, its record, its idempotency key), sorted by key."""
        if what == "charge":
            return [("charge", c, k) for k, c in sorted(self.provider.ledger().items())]
        made = _refunds_made(self.provider)
        return [("refund", r, k) for k, r in sorted(made.items()) if r["status"] in ("succeeded", "failed")]

    @rule(pick=PICK, what=st.sampled_from(["charge", "refund"]))
    def provider_event_delivered(self, pick: int, what: str) -> None:
        """(a) The provider's signed event for a charge or refund it settled, to the live server."""
        REPORT.steps += 1
        settled = self._settled_at_provider(what)
        if not settled:
            return
        kind, record, key = settled[pick % len(settled)]
        answer = self._send_event(event_body(kind, record, key, "USD"))
        assert answer.status_code == 200, answer.content
        REPORT.faults[f"event:delivered:{kind}"] += 1
        # I13: the provider's success (or final refusal) is recorded at once, with its id.
        if kind == "charge":
            txn = Transaction.objects.get(provider_idempotency_key=key)
            assert (txn.status, txn.provider_charge_id) == ("succeeded", record["id"]), (
                f"I13: the provider's charge.succeeded for {txn.pk} left it {txn.status} {answer.json()}"
            )
        else:
            row = Refund.objects.filter(provider_idempotency_key=key).first()
            if row is not None and record["status"] == "succeeded":
                assert (row.status, row.provider_refund_id) == ("succeeded", record["id"]), (
                    f"I13: the provider's refund.succeeded for {row.pk} left it {row.status} {answer.json()}"
                )

    @precondition(lambda self: self.events_sent)
    @rule(pick=PICK)
    def provider_event_duplicated(self, pick: int) -> None:
        """(b) An event sent before, sent again (at least once, maybe after later changes): the
        same id and signature. I13: it changes nothing."""
        REPORT.steps += 1
        body, msg_id, stamp, secret = self.events_sent[pick % len(self.events_sent)]
        if secret != SECRET or time.time() - stamp > 240:
            return  # the first was refused, or the signature would be stale now
        before = self._snapshot()
        answer = post_event(self.live_url + EVENTS_PATH, body, msg_id=msg_id, timestamp=stamp, secret=secret)
        REPORT.faults["event:duplicate"] += 1
        assert answer.status_code == 200 and answer.json()["duplicate"], answer.content
        assert self._snapshot() == before, f"I13: a duplicate event {msg_id} changed something"

    @rule(pick=PICK, what=st.sampled_from(["charge", "refund"]))
    def provider_event_stale(self, pick: int, what: str) -> None:
        """(c) An older event delivered after a newer state: a charge.declined (a refund.failed)
        signed two minutes ago, arriving after the row settled succeeded. I14: a final state
        never moves back, a success is never dropped, no outbox event is written."""
        REPORT.steps += 1
        model = Transaction if what == "charge" else Refund
        rows = model.objects.filter(status="succeeded").order_by("pk")
        row = rows[pick % rows.count()] if rows.exists() else None
        if row is None:
            return
        provider_id = row.provider_charge_id if what == "charge" else row.provider_refund_id
        refused = "declined" if what == "charge" else "failed"
        data = {"idempotency_key": row.provider_idempotency_key, "id": provider_id, "status": refused}
        body = {"type": f"{what}.{refused}", "data": data | {"amount": row.amount, "currency": "USD"}}
        before = self._snapshot()
        answer = self._send_event(body, age_s=120)
        REPORT.faults[f"event:stale:{what}"] += 1
        assert answer.status_code == 200, answer.content
        assert self._snapshot() == before, f"I14: a stale {body['type']} moved {row.pk} ({answer.json()})"

    @rule(
        pick=PICK,
        forgery=st.sampled_from(
            ["bad_signature", "stale_signature", "unsigned", "wrong_amount", "unknown_key"]
        ),
    )
    def provider_event_forged(self, pick: int, forgery: str) -> None:
        """(d) A success the provider never sent: signed with another secret, ten minutes old,
        unsigned (401, nothing stored), or signed but not fitting any row (another amount, a key
        of no row's). I14: no status changes and no outbox event; at most a lookup is asked for."""
        REPORT.steps += 1
        ids = sorted(Transaction.objects.values_list("provider_idempotency_key", flat=True))
        key = ids[pick % len(ids)] if ids and forgery != "unknown_key" else f"never-made-{pick}"
        amount = 1 if forgery == "wrong_amount" else 1999
        data = {"idempotency_key": key, "id": f"ch_forged{pick}", "status": "succeeded"}
        body = {"type": "charge.succeeded", "data": data | {"amount": amount, "currency": "USD"}}
        before = self._snapshot()
        answer = self._send_event(
            body,
            secret=OTHER_SECRET if forgery == "bad_signature" else SECRET,
            age_s=600 if forgery == "stale_signature" else 0,
            signed=forgery != "unsigned",
        )
        REPORT.faults[f"event:forged:{forgery}"] += 1
        expected = 200 if forgery in ("wrong_amount", "unknown_key") else 401
        assert answer.status_code == expected, answer.content
        assert self._snapshot() == before, f"I14: a forged event ({forgery}) changed something"

    @precondition(lambda self: len(self.endpoints) < 3)
    @rule(down=st.booleans())
    def register_endpoint(self, down: bool) -> None:
        """(e) The client registers an endpoint on the local receiver, or at an address that is down."""
        from payments import services

        REPORT.steps += 1
        path = f"/hooks/ep{len(self.endpoints)}"
        if self.silent:
            self._refused_while_silent(
                lambda: services.endpoint_create(
                    client=self.user, url=self._hook_url(path, down), events=EVENT_TYPES
                )
            )
            return
        endpoint = services.endpoint_create(
            client=self.user, url=self._hook_url(path, down), events=EVENT_TYPES
        )
        self.endpoints[str(endpoint.pk)] = Hook(
            path, set(ClientEvent.objects.values_list("id", flat=True)), down
        )

    def _hook_url(self, path: str, down: bool) -> str:
        return f"http://{HANGING_HOST}:{self.down_port if down else self.receiver.port}{path}"

    def _refused_while_silent(self, change: Callable[[], Any]) -> None:
        """A registration or a URL change while the name gets no answer: refused, nothing changed."""
        before = list(WebhookEndpoint.objects.values().order_by("pk"))
        with pytest.raises(InvalidRequest, match="did not resolve within") as refused:
            change()
        assert refused.value.code == "url_not_allowed"
        after = list(WebhookEndpoint.objects.values().order_by("pk"))
        assert after == before, "a refused URL changed something"
        connection.close()

    @rule()
    def resolver_silent_or_back(self) -> None:
        """(f) The resolver stops answering for the endpoints' name, or answers again: deliveries
        to them fail at the lookup's bound and go once it answers."""
        REPORT.steps += 1
        self.silent = not self.silent
        REPORT.faults[f"resolver:{'silent' if self.silent else 'back'}"] += 1
        if self.silent:
            self.resolver.go_silent()
        else:
            self.resolver.release()

    @precondition(lambda self: self.endpoints)
    @rule(pick=PICK)
    def endpoint_up_or_down(self, pick: int) -> None:
        """An endpoint's host goes down, or comes back (its URL moved, its deliveries go on)."""
        from payments import services

        REPORT.steps += 1
        pk = sorted(self.endpoints)[pick % len(self.endpoints)]
        hook = self.endpoints[pk]
        endpoint = WebhookEndpoint.objects.get(pk=pk)
        if self.silent:
            self._refused_while_silent(
                lambda: services.endpoint_update(endpoint, url=self._hook_url(hook.path, not hook.down))
            )
            return
        hook.down = not hook.down
        services.endpoint_update(endpoint, url=self._hook_url(hook.path, hook.down))

    @rule(answer=st.sampled_from(["ok", "ok", "500"]))
    def deliver(self, answer: str) -> None:
        """One pass of the delivery loop; the receiver answers 204 or 500 (down ones: no answer)."""
        REPORT.steps += 1
        REPORT.faults[f"deliver:{answer}"] += 1
        self._deliver(answer)

    def _deliver(self, answer: str) -> None:
        self.receiver.mode = answer
        first = len(self.receiver.requests)
        deliver_pass(actor="model")
        connection.close()
        self.heard.extend(heard(self.receiver.requests[first:], 204 if answer == "ok" else 500))
        REPORT.answers[f"deliveries {answer}"] += len(self.receiver.requests) - first

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

    def _record_refund_answer(self, answer: RefundAnswer, *, by: str) -> None:
        """I11 at answer time: a "not refunded" answer that names no refund wrote none; a 201
        is a refund the provider made."""
        self.refund_answers.append(answer)
        REPORT.answers[f"refund {by} {answer.http_status or ''} {answer.name}".replace("  ", " ")] += 1
        if answer.not_refunded and answer.refund is None and answer.new_rows:
            raise AssertionError(
                f"I11: {answer.name} kept nothing, yet refunds {answer.new_rows} were written"
            )
        if answer.http_status == 201 and answer.refund:
            key = Refund.objects.get(pk=answer.refund[0]).provider_idempotency_key
            made = _refunds_made(self.provider).get(key)
            assert made and made["status"] == "succeeded", (
                f"I8: answered 201 for {answer.refund[0]}, not made"
            )

    @invariant()
    def refunded_never_exceeds_charged(self) -> None:
        """I9: per charge, what the provider refunded and what the database counts never exceed it."""
        charged = {key: charge["amount"] for key, charge in self.provider.ledger().items()}
        for charge_key, refunds in self.provider.refund_ledger().items():
            made = sum(r["amount"] for r in refunds.values() if r["status"] in ("succeeded", "pending"))
            assert made <= charged.get(charge_key, 0), f"I9: the provider refunded {made} of {charge_key}"
        amounts = dict(Transaction.objects.values_list("pk", "amount"))
        totals = (
            Refund.objects.values("transaction_id")
            .annotate(
                succeeded=Sum("amount", filter=Q(status=Refund.Status.SUCCEEDED)),
                counted=Sum("amount", filter=Q(status__in=Refund.COUNTED_STATUSES)),
            )
            .values_list("transaction_id", "succeeded", "counted")
        )
        for txn_id, succeeded, counted in totals:
            assert (succeeded or 0) <= amounts[txn_id], f"I9: {succeeded} refunded of {txn_id}"
            assert (counted or 0) <= amounts[txn_id], f"I9: {counted} succeeded, pending, unknown of {txn_id}"

    @invariant()
    def events_out_never_lost_nor_doubled(self) -> None:
        """I12: per endpoint, every outbox event written since it was registered has one delivery,
        delivered or still scheduled (none given up); what its receiver heard came in sequence
        order, signed with its secret, and nothing it answered 2xx came again."""
        self._check_deliveries(final=False)

    def _check_deliveries(self, *, final: bool) -> None:
        events = set(ClientEvent.objects.values_list("id", flat=True))
        for pk, hook in self.endpoints.items():
            endpoint = WebhookEndpoint.objects.get(pk=pk)
            rows = list(
                endpoint.deliveries.order_by("sequence").values_list("event_id", "sequence", "status")
            )
            assert sorted(e for e, _, _ in rows) == sorted(events - hook.before), (
                f"I12: endpoint {hook.path} has deliveries of {sorted(e for e, _, _ in rows)}, "
                f"the outbox since it was registered {sorted(events - hook.before)}"
            )
            sequence = {event_id: seq for event_id, seq, _ in rows}
            given_up = [e for e, _, status in rows if status == EventDelivery.Status.FAILED]
            assert not given_up, f"I12: deliveries of {given_up} to {hook.path} given up"
            if final and not hook.down:
                pending = [e for e, _, status in rows if status != EventDelivery.Status.SUCCEEDED]
                assert not pending, f"I12: {hook.path} is up, yet {pending} are not delivered"
            got = [h for h in self.heard if h.path == hook.path]
            order = [sequence.get(h.event_id, -1) for h in got]
            assert order == sorted(order) and -1 not in order, f"I12: {hook.path} heard {order}"
            answered_2xx = [h.event_id for h in got if h.status == 204]
            assert len(answered_2xx) == len(set(answered_2xx)), f"I12: {hook.path} got an event twice"
            delivered = {e for e, _, status in rows if status == EventDelivery.Status.SUCCEEDED}
            assert delivered == set(answered_2xx), (
                f"I12: {hook.path} delivered {delivered}, 2xx {answered_2xx}"
            )
            for h in got:
                assert h.request.verified(endpoint.secret)["id"] == h.event_id, f"I12: {h.event_id} unsigned"

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
        # I10: one outbox event per settled state, written with it, never lost nor doubled.
        events: dict[str, Counter[str]] = {pk: Counter() for pk in rows}
        shown: dict[tuple[str, str], str] = {}
        for event in ClientEvent.objects.filter(refund=None).exclude(transaction=None):  # a charge's own
            events[str(event.transaction_id)][event.type] += 1
            shown[(str(event.transaction_id), event.type)] = event.payload["data"]["object"]["status"]
        for pk, txn in rows.items():
            final_types = {t: n for t, n in events[pk].items() if t != "charge.needs_review"}
            assert all(n == 1 for n in final_types.values()), f"I10: {pk} has {dict(events[pk])}"
            if txn.status in ("succeeded", "declined", "canceled"):
                assert events[pk][f"charge.{txn.status}"] == 1, (
                    f"I10: {pk} is {txn.status}, events {dict(events[pk])}"
                )
                assert shown[(pk, f"charge.{txn.status}")] == txn.status
            allowed = {f"charge.{txn.status}"} | ({"charge.canceled"} if txn.status == "succeeded" else set())
            assert set(final_types) <= allowed, f"I10: {pk} is {txn.status}, events {dict(events[pk])}"
        # Refunds: the fake's held refunds settled, reconcile_refunds run (the window passed above).
        for refunds in self.provider.refund_ledger().values():
            for refund_key, made in refunds.items():
                if made["status"] == "pending":
                    self.provider.settle_refund(refund_key)
        _run_command("reconcile_refunds")
        self._check_refunds_agree()
        # I12 at quiescence: one more pass, the resolver answering and the receiver answering 204:
        # every endpoint that is up has every event; a down one's are still scheduled.
        self.resolver.release()
        self.silent = False
        self._deliver("ok")
        self._check_deliveries(final=True)

    def _check_refunds_agree(self) -> None:
        """I8 and I11 at quiescence."""
        made_by_key = {
            key: (charge_key, made)
            for charge_key, refunds in self.provider.refund_ledger().items()
            for key, made in refunds.items()
        }
        rows = {r.provider_idempotency_key: r for r in Refund.objects.select_related("transaction")}
        stuck = [(str(r.pk), r.status) for r in rows.values() if r.status in ("pending", "unknown")]
        assert not stuck, f"I8: refunds still pending or unknown after reconcile_refunds: {stuck}"
        for key, (charge_key, made) in made_by_key.items():
            row = rows.get(key)
            assert row is not None, f"I8: the provider made refund {made['id']}, which no Refund row holds"
            assert (row.transaction.provider_idempotency_key, row.amount) == (charge_key, made["amount"]), (
                f"I8: refund {row.pk} is {row.amount} of another charge than the provider's {made}"
            )
            if made["status"] == "succeeded":
                assert (row.status, row.provider_refund_id) == ("succeeded", made["id"]), (
                    f"I8: the provider refunded {made['id']}; refund {row.pk} is {row.status}"
                )
            else:
                assert row.status in ("failed", "canceled"), (
                    f"I8: {row.pk} {row.status}, the provider's {made}"
                )
        for row in rows.values():
            if row.status == "succeeded":
                made = made_by_key.get(row.provider_idempotency_key, ("", {}))[1]
                assert made.get("status") == "succeeded", f"I8: {row.pk} succeeded, the provider made {made}"
        for key in {a.key for a in self.refund_answers if a.key}:
            assert Refund.objects.filter(idempotency_key=key).count() <= 1, (
                f"I8: key {key!r} made two refunds"
            )
        # I11: a not-refunded answer was true for that try.
        by_pk = {str(r.pk): r for r in rows.values()}
        for answer in self.refund_answers:
            if not answer.not_refunded:
                continue
            for named in {answer.refund, answer.key_row} - {None}:
                row = by_pk.get(named[0])
                if row is None or row.provider_idempotency_key not in made_by_key:
                    continue
                made = made_by_key[row.provider_idempotency_key][1]
                assert made["status"] == "failed" or row.attempts > named[1], (
                    f"I11: answered {answer.http_status} {answer.name} for refund {row.pk}, which the "
                    "provider made through that very try"
                )


def _pick(ids: list[str], pick: int) -> str:
    return ids[pick % len(ids)]


def _refunds_made(fake: FakeProvider) -> dict[str, dict[str, Any]]:
    """The provider's refunds by refund key."""
    return {key: made for refunds in fake.refund_ledger().values() for key, made in refunds.items()}


def _run_command(name: str) -> None:
    try:
        call_command(name, "--json", stdout=io.StringIO(), stderr=io.StringIO())
    except CommandError as error:
        assert error.returncode == 1, f"{name} exited {error.returncode}: {error}"
    finally:
        connection.close()


def test_exactly_once_under_injected_faults(
    live_server: Any,
    fake_provider: FakeProvider,
    api_user_token: tuple[Any, str],
    settings: Any,
    hanging_resolver: HangingResolver,
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
    PaymentsMachine.user = api_user_token[0]
    settings.PAYMENT_WEBHOOK_SECRET = (SECRET,)
    settings.EVENTS_ALLOW_PRIVATE_URLS = True  # the receiver is on loopback
    settings.EVENTS_TIMEOUT_MS = 300
    settings.EVENTS_RETRY_BASE_MS = 0  # a failed delivery is due again at once (each pass tries it once)
    settings.EVENTS_DISABLE_AFTER_FAILURES = 0
    with Receiver() as receiver:
        PaymentsMachine.receiver = receiver
        PaymentsMachine.down_port = closed_port()
        PaymentsMachine.resolver = hanging_resolver
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
