from __future__ import annotations

import html
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from fakeprovider import FakeProvider
from payments.admin.transaction import ACTION_MAX_ROWS, TransactionAdmin
from payments.models import PaymentAttempt, Transaction
from payments.services import SUPPORT_GROUP_NAME
from tests.support.factories import charge, failed, shop, stale_pending, unknown
from tests.support.network import closed_port

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/payments/transaction/"
Status = Transaction.Status


def act(client: Client, action: str, *transactions: Transaction, query: str = "", **extra: str) -> Any:
    data = {"action": action, "_selected_action": [str(t.pk) for t in transactions], **extra}
    if "apply" not in extra:
        data["index"] = "0"
    return client.post(f"{CHANGELIST}{query}", data, follow=True)


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_create_support_user_makes_a_staff_user_in_the_support_group(support: Client) -> None:
    user = get_user_model().objects.get(username="alice")

    assert user.is_staff and not user.is_superuser
    assert list(user.groups.values_list("name", flat=True)) == [SUPPORT_GROUP_NAME]
    assert {p for p in user.get_all_permissions()} == {
        "payments.view_transaction",
        "payments.view_paymentattempt",
        "payments.retry_transaction",
        "payments.cancel_transaction",
        "payments.view_refund",
        "payments.refund_transaction",
        "payments.view_providerevent",
        "payments.view_webhookendpoint",
        "payments.view_clientevent",
        "payments.view_eventdelivery",
        "payments.replay_delivery",
    }


def test_migration_creates_the_support_group_with_its_permissions(transactional_db: None) -> None:
    import importlib

    from django.apps import apps
    from django.db import connection

    migration = importlib.import_module("payments.migrations.0002_payment_support")
    Group.objects.filter(name=SUPPORT_GROUP_NAME).delete()  # other tests may have made it

    with connection.schema_editor() as schema_editor:
        migration.create_support_group(apps, schema_editor)

    group = Group.objects.get(name=SUPPORT_GROUP_NAME)
    assert sorted(group.permissions.values_list("codename", flat=True)) == [
        "cancel_transaction",
        "retry_transaction",
        "view_paymentattempt",
        "view_transaction",
    ]


def test_list_opens_on_failed_payments_with_their_columns(support: Client) -> None:
    down = failed(attempts=2)
    done = charge("tok_visa")
    maybe_charged = unknown()

    response = support.get(CHANGELIST)

    assert response.status_code == 200
    body = response.content.decode()
    assert str(down.pk) in body and str(done.pk) not in body and str(maybe_charged.pk) not in body
    for text in ("19.99 USD", "provider_error (connection_error)", "shop", "Retry selected", "Cancel…"):
        assert text in body
    everything = support.get(f"{CHANGELIST}?status=all").content.decode()
    assert all(str(t.pk) in everything for t in (down, done, maybe_charged))
    unknown_only = support.get(CHANGELIST, {"status": "unknown"})
    assert list(unknown_only.context["cl"].result_list) == [maybe_charged]
    assert "outcome_unknown (provider_timeout)" in unknown_only.content.decode()


def test_search_by_transaction_id_finds_it_whatever_its_status(support: Client) -> None:
    done = charge("tok_visa")

    response = support.get(CHANGELIST, {"q": str(done.pk)})

    assert list(response.context["cl"].result_list) == [done]


def test_needs_review_filter_shows_flagged_rows_that_are_not_final(support: Client) -> None:
    exhausted = failed(attempts=6, next_retry_at=None, review_reason="not charged after 6 tries")
    bad_lookup = unknown(review_reason="the provider's answer to a lookup could not be used")
    due = failed()
    not_due_unflagged = failed(next_retry_at=None)  # no reason given: not for a person yet
    canceled = failed(status=Status.CANCELED, next_retry_at=None, review_reason="not charged after 6 tries")

    flagged = support.get(CHANGELIST, {"needs_review": "yes", "status": "all"})
    others = support.get(CHANGELIST, {"needs_review": "no", "status": "all"})

    assert set(flagged.context["cl"].result_list) == {exhausted, bad_lookup}
    assert set(others.context["cl"].result_list) == {due, not_due_unflagged, canceled}
    body = flagged.content.decode()
    cell = '<td class="field-next_retry">needs review</td>'
    assert body.count(cell) == 2, "the next-retry column says so instead of a date"


def test_change_page_shows_attempts_read_only(support: Client) -> None:
    txn = charge("tok_flaky")

    response = support.get(f"{CHANGELIST}{txn.pk}/change/")

    assert response.status_code == 200
    body = response.content.decode()
    assert txn.status == Status.SUCCEEDED, "tok_flaky: two 503s, then a charge, in one request"
    assert "19.99 USD" in body and body.count("provider_error") >= 2, "each failed attempt is listed"
    assert 'name="amount"' not in body and 'name="status"' not in body
    assert "tok_flaky" not in body, "the card token is never shown"


def test_support_user_cannot_change_amounts_delete_add_or_reach_other_models(support: Client) -> None:
    txn = failed()
    Token.objects.create(user=shop())

    change = support.post(f"{CHANGELIST}{txn.pk}/change/", {"amount": 1, "status": "succeeded"})
    delete = support.post(f"{CHANGELIST}{txn.pk}/delete/", {"post": "yes"})

    assert change.status_code == 403
    assert delete.status_code == 403
    assert support.get(f"{CHANGELIST}add/").status_code == 403
    txn.refresh_from_db()
    assert (txn.amount, txn.status) == (1999, Status.FAILED)
    for url in ("/admin/auth/user/", "/admin/auth/group/", "/admin/authtoken/tokenproxy/"):
        assert support.get(url).status_code == 403, url
    index = support.get("/admin/").content.decode()
    assert "Transactions" in index and "Users" not in index and "Tokens" not in index


def test_retry_action_reports_counts_and_is_recorded_in_the_admin_log(
    support: Client, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    will_succeed = failed()
    keeps_failing = charge("tok_error")
    canceled = failed(status=Status.CANCELED)
    maybe_charged = unknown()
    assert (keeps_failing.status, keeps_failing.error_type) == (Status.FAILED, "provider_error")

    response = act(
        support, "retry_selected", will_succeed, keeps_failing, canceled, maybe_charged, query="?status=all"
    )

    assert messages_of(response) == ["Retry selected: 1 succeeded, 1 failed, 2 skipped."]
    assert Transaction.objects.get(pk=will_succeed.pk).status == Status.SUCCEEDED
    assert fake_provider.charge_count(will_succeed.provider_idempotency_key) == 1
    keeps_failing = Transaction.objects.get(pk=keeps_failing.pk)
    assert (keeps_failing.status, keeps_failing.attempts) == (Status.FAILED, 2)
    assert keeps_failing.next_retry_at is not None, "still scheduled: below PAYMENT_MAX_ATTEMPTS"
    assert Transaction.objects.get(pk=maybe_charged.pk).status == Status.UNKNOWN, (
        "retry never sends an unknown"
    )
    assert fake_provider.request_count(maybe_charged.provider_idempotency_key) == 0
    logged = LogEntry.objects.filter(user__username="alice").values_list("object_id", "change_message")
    assert sorted(logged) == sorted(
        [
            (str(will_succeed.pk), "Retry: succeeded."),
            (str(keeps_failing.pk), "Retry: failed. HTTP 500"),
        ]
    )


def test_retry_action_on_the_last_allowed_try_flags_the_row_for_review(
    support: Client, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    settings.PAYMENT_MAX_ATTEMPTS = 2
    last_try = charge("tok_error")

    act(support, "retry_selected", last_try)
    again = act(support, "retry_selected", last_try)

    last_try = Transaction.objects.get(pk=last_try.pk)
    assert (last_try.status, last_try.attempts, last_try.next_retry_at) == (Status.FAILED, 2, None)
    assert last_try.needs_review and last_try.review_reason
    assert messages_of(again) == ["Retry selected: 0 succeeded, 0 failed, 1 skipped."]
    flagged = support.get(CHANGELIST, {"needs_review": "yes"})
    assert list(flagged.context["cl"].result_list) == [last_try]


def age(txn: Transaction, seconds: float) -> Transaction:
    """Move the row's last charge call `seconds` into the past."""
    started = timezone.now() - timedelta(seconds=seconds)
    Transaction.objects.filter(pk=txn.pk).update(charge_started_at=started, updated_at=started)
    return Transaction.objects.get(pk=txn.pk)


def test_reconcile_action_settles_unknown_outcomes_once_no_attempt_can_be_in_flight(
    support: Client, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    fake_provider.inject({"kind": "drop_after"})  # charged, but the answer never came back
    answer_lost = charge("tok_visa")
    assert (answer_lost.status, answer_lost.error_code) == (Status.UNKNOWN, "connection_dropped")
    answer_lost = age(answer_lost, settings.PAYMENT_RECONCILE_AFTER_S + 1)
    never_arrived = unknown(age=timedelta(seconds=settings.PAYMENT_RECONCILE_AFTER_S + 1))
    maybe_in_flight = unknown(age=timedelta(seconds=0))
    known_failure = failed()

    response = act(
        support,
        "reconcile_selected",
        answer_lost,
        never_arrived,
        maybe_in_flight,
        known_failure,
        query="?status=all",
    )

    assert messages_of(response) == [
        "Reconcile selected: 1 succeeded, 0 failed, 1 skipped, 1 unknown, 1 not charged."
    ]
    answer_lost = Transaction.objects.get(pk=answer_lost.pk)
    assert (answer_lost.status, answer_lost.provider_charge_id[:3]) == (Status.SUCCEEDED, "ch_")
    assert fake_provider.charge_count(answer_lost.provider_idempotency_key) == 1
    never_arrived = Transaction.objects.get(pk=never_arrived.pk)
    assert (never_arrived.status, never_arrived.error_type, never_arrived.error_code) == (
        Status.FAILED,
        "provider_error",
        "not_charged",
    )
    assert never_arrived.next_retry_at <= timezone.now(), "proved not charged: due at once"
    assert Transaction.objects.get(pk=maybe_in_flight.pk).status == Status.UNKNOWN, "a 404 proves nothing yet"
    assert Transaction.objects.get(pk=known_failure.pk).status == Status.FAILED
    assert fake_provider.request_count(known_failure.provider_idempotency_key) == 0
    logged = dict(LogEntry.objects.filter(user__username="alice").values_list("object_id", "change_message"))
    assert logged[str(answer_lost.pk)] == "Reconcile: succeeded."
    assert logged[str(never_arrived.pk)].startswith("Reconcile: not_charged.")
    assert logged[str(maybe_in_flight.pk)].startswith("Reconcile: unknown. no charge found yet")
    assert str(known_failure.pk) not in logged


def test_cancel_asks_for_a_reason_then_cancels_and_logs_it(support: Client) -> None:
    txn = failed(error_code="provider_error")
    maybe_charged = unknown()
    in_flight = stale_pending(age=timedelta(seconds=0))

    page = act(support, "cancel_selected", txn, maybe_charged, in_flight, query="?status=all")
    assert page.status_code == 200
    assert page.templates[0].name == "admin/payments/transaction/cancel_selected.html"
    body = page.content.decode()
    assert "skipped: the provider may have charged it; reconcile it first" in body
    assert "skipped: it is being sent to the provider right now" in body
    assert 'value="Cancel 1 payment"' in body
    without_reason = act(support, "cancel_selected", txn, apply="yes", reason="  ")
    assert "This field is required." in without_reason.content.decode()
    assert Transaction.objects.get(pk=txn.pk).status == Status.FAILED

    done = act(
        support,
        "cancel_selected",
        txn,
        maybe_charged,
        in_flight,
        query="?status=all",
        apply="yes",
        reason="Paid by bank transfer",
    )

    assert messages_of(done) == ["Canceled 1 payment(s); 2 skipped."]
    txn.refresh_from_db()
    assert (txn.status, txn.status_note, txn.next_retry_at) == (
        Status.CANCELED,
        "Paid by bank transfer",
        None,
    )
    assert Transaction.objects.get(pk=maybe_charged.pk).status == Status.UNKNOWN
    assert Transaction.objects.get(pk=in_flight.pk).status == Status.PENDING
    entry = LogEntry.objects.get(user__username="alice")
    assert (entry.object_id, entry.change_message) == (str(txn.pk), "Canceled: Paid by bank transfer")


@pytest.mark.parametrize(
    ("action", "extra"),
    [
        ("retry_selected", {}),
        ("reconcile_selected", {}),
        ("cancel_selected", {}),  # the confirmation page
        (
            "cancel_selected",
            {"apply": "yes", "reason": "Paid by bank transfer"},
        ),  # its apply, posted directly
    ],
)
def test_every_bulk_action_refuses_more_than_50_rows_with_one_message_and_changes_nothing(
    support: Client, fake_provider: FakeProvider, action: str, extra: dict[str, str]
) -> None:
    assert set(TransactionAdmin.actions) == {"retry_selected", "reconcile_selected", "cancel_selected"}, (
        "a new bulk action needs a row here"
    )
    rows = [failed() for _ in range(ACTION_MAX_ROWS + 1)] + [unknown()]
    before = sorted(Transaction.objects.values_list("pk", "status", "updated_at"))

    refused = act(support, action, *rows[1:], query="?status=all", **extra)
    across = act(support, action, rows[0], query="?status=all", select_across="1", **extra)

    for response in (refused, across):
        assert messages_of(response) == [
            f"Select at most {ACTION_MAX_ROWS} payments; use the management commands for more."
        ]
        assert response.templates[0].name == "admin/change_list.html"
    assert sorted(Transaction.objects.values_list("pk", "status", "updated_at")) == before
    assert fake_provider.total_charges() == 0
    assert not LogEntry.objects.exists()


def test_cancel_takes_50_rows(support: Client) -> None:
    rows = [failed() for _ in range(ACTION_MAX_ROWS)]

    done = act(support, "cancel_selected", *rows, apply="yes", reason="Paid by bank transfer")

    assert messages_of(done) == [f"Canceled {ACTION_MAX_ROWS} payment(s); 0 skipped."]
    assert set(Transaction.objects.values_list("status", flat=True)) == {Status.CANCELED}


def test_staff_user_without_the_retry_permission_cannot_run_the_action(
    support: Client, fake_provider: FakeProvider
) -> None:
    viewer = get_user_model().objects.create_user("viewer", password="pw-viewer", is_staff=True)
    viewer.user_permissions.add(
        *Group.objects.get(name=SUPPORT_GROUP_NAME).permissions.filter(codename__startswith="view_")
    )
    client = Client()
    client.login(username="viewer", password="pw-viewer")
    txn = failed()

    assert "Retry selected" not in client.get(CHANGELIST).content.decode()
    act(client, "retry_selected", txn)

    assert Transaction.objects.get(pk=txn.pk).status == Status.FAILED
    assert fake_provider.request_count(txn.provider_idempotency_key) == 0


# The change page: state banner, actions, attempts, fixed messages, dates ------------------


def change_page(client: Client, txn: Transaction) -> str:
    response = client.get(f"{CHANGELIST}{txn.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def banner_of(body: str) -> str:
    start = body.index('id="payment-state"')
    text = re.sub(r"<[^>]+>", " ", body[start : body.index("</section>", start)])
    return re.sub(r"\s+", " ", html.unescape(text))


def buttons_of(body: str) -> list[str]:
    start = body.index('id="payment-state"')
    banner = body[start : body.index("</section>", start)]
    return re.findall(r'<button type="submit" class="button">([^<]+)</button>|>(Cancel…)</a>', banner)


def offered(body: str) -> set[str]:
    return {label for pair in buttons_of(body) for label in pair if label}


def declined(source: str) -> Transaction:
    txn = charge(source)
    assert txn.status == Status.DECLINED
    return txn


@pytest.mark.parametrize(
    ("make", "title", "lines", "actions"),
    [
        (
            lambda: charge("tok_visa"),
            "Succeeded: the provider charged the card.",
            ["Provider charge id: ch_"],
            set(),
        ),
        (
            lambda: declined("tok_insufficientFunds"),
            "Declined: the card was declined. Nothing was charged.",
            ["Decline code: insufficient_funds."],
            set(),
        ),
        (
            lambda: failed(error_code="", error_type="provider_rejected", status=Status.DECLINED),
            "Declined: the payment provider refused this payment's details.",
            ["Provider code: none given."],
            set(),
        ),
        (
            lambda: unknown(age=timedelta(seconds=1)),
            "Outcome unknown: the provider may have charged; Reconcile asks it.",
            ["An attempt may still be in flight until", "a lookup before then proves nothing"],
            {"Reconcile"},
        ),
        (
            lambda: unknown(age=timedelta(minutes=11)),
            "Outcome unknown: the provider may have charged; Reconcile asks it.",
            ["No attempt can be in flight since", "Do not cancel it"],
            {"Reconcile"},
        ),
        (
            lambda: failed(next_retry_at=timezone.now() + timedelta(minutes=5)),
            "Not charged: retry is safe.",
            ["Automatic retry scheduled at", "Tries: 1 of 6."],
            {"Retry now", "Cancel…"},
        ),
        (
            lambda: failed(next_retry_at=timezone.now() - timedelta(minutes=42, seconds=10)),
            "Not charged: retry is safe.",
            ["Overdue by 42 min. Is retry_failed_payments running?"],
            {"Retry now", "Cancel…"},
        ),
        (
            lambda: failed(attempts=6, next_retry_at=None, review_reason="not charged after 6 tries"),
            "Needs review: not charged, and never sent again automatically.",
            ["Why: not charged after 6 tries.", "No tries left"],
            {"Cancel…"},
        ),
        (
            lambda: failed(status=Status.CANCELED, next_retry_at=None, status_note="Paid by bank transfer"),
            "Canceled: this payment was canceled and will not be charged.",
            ["Reason: Paid by bank transfer."],
            set(),
        ),
        (
            lambda: stale_pending(age=timedelta(seconds=0)),
            "In flight: a request is sending it to the provider right now.",
            ["Reload in a moment."],
            set(),
        ),
        (
            lambda: stale_pending(age=timedelta(minutes=11)),
            "Abandoned: the provider may have charged; Reconcile asks it.",
            ["longer than the reconcile window (5 s)"],
            {"Reconcile"},
        ),
    ],
    ids=[
        "succeeded",
        "declined",
        "rejected",
        "unknown-in-flight",
        "unknown-past-window",
        "retry-scheduled",
        "retry-overdue",
        "needs-review",
        "canceled",
        "pending",
        "abandoned",
    ],
)
def test_change_page_says_what_happened_and_offers_the_actions_allowed(
    support: Client, make: Callable[[], Transaction], title: str, lines: list[str], actions: set[str]
) -> None:
    txn = make()

    body = change_page(support, txn)

    banner = banner_of(body)
    assert title in banner
    for line in lines:
        assert line in banner
    assert f"transaction_id={txn.pk}" in banner, "the logs' key for the details"
    assert offered(body) == actions


def test_action_buttons_need_the_permission(support: Client, fake_provider: FakeProvider) -> None:
    viewer = get_user_model().objects.create_user("viewer", password="pw-viewer", is_staff=True)
    viewer.user_permissions.add(
        *Group.objects.get(name=SUPPORT_GROUP_NAME).permissions.filter(codename__startswith="view_")
    )
    client = Client()
    client.login(username="viewer", password="pw-viewer")
    txn = failed()

    assert offered(change_page(client, txn)) == set()
    assert client.post(f"{CHANGELIST}{txn.pk}/retry/").status_code == 403
    assert client.get(f"{CHANGELIST}{txn.pk}/cancel/").status_code == 403
    assert support.get(f"{CHANGELIST}{txn.pk}/retry/").status_code == 405, "POST only"
    assert Transaction.objects.get(pk=txn.pk).status == Status.FAILED
    assert fake_provider.request_count(txn.provider_idempotency_key) == 0


def test_page_actions_need_the_csrf_token(transactional_db: None, fake_provider: FakeProvider) -> None:
    call_command("create_support_user", "bob", "--password", "pw-bob", stdout=io.StringIO())
    client = Client(enforce_csrf_checks=True)
    client.login(username="bob", password="pw-bob")
    txn = failed()

    assert client.post(f"{CHANGELIST}{txn.pk}/retry/").status_code == 403

    assert fake_provider.request_count(txn.provider_idempotency_key) == 0


def test_retry_now_on_the_page_reports_and_logs_its_result(
    support: Client, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    will_succeed = failed()
    keeps_failing = charge("tok_error")

    done = support.post(f"{CHANGELIST}{will_succeed.pk}/retry/", follow=True)
    again = support.post(f"{CHANGELIST}{keeps_failing.pk}/retry/", follow=True)

    assert done.redirect_chain[-1][0] == f"{CHANGELIST}{will_succeed.pk}/change/"
    assert messages_of(done) == ["Retry: succeeded, the provider charged the card."]
    assert "Succeeded: the provider charged the card." in banner_of(done.content.decode())
    assert Transaction.objects.get(pk=will_succeed.pk).status == Status.SUCCEEDED
    assert fake_provider.charge_count(will_succeed.provider_idempotency_key) == 1
    assert messages_of(again) == ["Retry: failed again, not charged. HTTP 500"]
    assert Transaction.objects.get(pk=keeps_failing.pk).attempts == 2
    logged = sorted(
        LogEntry.objects.filter(user__username="alice").values_list("object_id", "change_message")
    )
    assert logged == sorted(
        [(str(will_succeed.pk), "Retry: succeeded."), (str(keeps_failing.pk), "Retry: failed. HTTP 500")]
    )


def test_reconcile_on_the_page_finds_the_charge_or_proves_there_was_none(
    support: Client, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    fake_provider.inject({"kind": "drop_after"})  # charged, but the answer never came back
    answer_lost = age(charge("tok_visa"), settings.PAYMENT_RECONCILE_AFTER_S + 1)
    never_arrived = unknown(age=timedelta(seconds=settings.PAYMENT_RECONCILE_AFTER_S + 1))

    found = support.post(f"{CHANGELIST}{answer_lost.pk}/reconcile/", follow=True)
    none = support.post(f"{CHANGELIST}{never_arrived.pk}/reconcile/", follow=True)

    assert messages_of(found) == ["Reconcile: succeeded, the provider charged the card."]
    assert Transaction.objects.get(pk=answer_lost.pk).status == Status.SUCCEEDED
    assert fake_provider.charge_count(answer_lost.provider_idempotency_key) == 1
    assert messages_of(none) == ["Reconcile: the provider made no charge, retry is safe."]
    assert "A lookup proved the provider made no charge." in banner_of(none.content.decode())
    assert offered(none.content.decode()) == {"Retry now", "Cancel…"}
    assert Transaction.objects.get(pk=never_arrived.pk).error_code == "not_charged"
    logged = dict(LogEntry.objects.filter(user__username="alice").values_list("object_id", "change_message"))
    assert logged[str(answer_lost.pk)] == "Reconcile: succeeded."
    assert logged[str(never_arrived.pk)].startswith("Reconcile: not_charged.")


def test_cancel_on_the_page_asks_for_a_reason_and_refuses_an_unknown_outcome(support: Client) -> None:
    txn = failed()
    maybe_charged = unknown()
    url = f"{CHANGELIST}{txn.pk}/cancel/"

    form = support.get(url)
    blank = support.post(url, {"reason": "  "})
    refused = support.post(f"{CHANGELIST}{maybe_charged.pk}/cancel/", {"reason": "x"}, follow=True)
    done = support.post(url, {"reason": "Customer paid by bank transfer"}, follow=True)

    assert form.status_code == 200 and 'name="reason"' in form.content.decode()
    assert "This field is required." in blank.content.decode()
    assert messages_of(refused) == ["Cannot cancel: the provider may have charged it; reconcile it first."]
    assert Transaction.objects.get(pk=maybe_charged.pk).status == Status.UNKNOWN
    assert messages_of(done) == ["Canceled: Customer paid by bank transfer. It will never be sent again."]
    assert "Reason: Customer paid by bank transfer." in banner_of(done.content.decode())
    txn.refresh_from_db()
    assert (txn.status, txn.status_note) == (Status.CANCELED, "Customer paid by bank transfer")
    entry = LogEntry.objects.get(user__username="alice")
    assert (entry.object_id, entry.change_message) == (
        str(txn.pk),
        "Canceled: Customer paid by bank transfer",
    )


def test_refused_connections_are_not_said_to_have_reached_the_provider(
    support: Client, settings: Any
) -> None:
    settings.PAYMENT_SERVICE_URL = f"http://127.0.0.1:{closed_port()}/v1/charges"
    txn = charge("tok_visa")
    assert (txn.status, txn.error_code) == (Status.FAILED, "connection_error")
    tries = PaymentAttempt.objects.filter(transaction=txn).count()
    assert tries == settings.PAYMENT_MAX_RETRIES + 1

    body = change_page(support, txn)

    summary = f"0 charge attempts reached the provider; {tries} refused connections, nothing sent"
    assert body.count(summary) == 2, "in the tries field and above the attempts"
    assert body.count("no: connection refused, nothing sent") == tries
    assert '<td class="field-reached">yes</td>' not in body
    assert "charge attempt 1:" not in body, "no per-row caption (the attempt's str)"


def test_lookups_are_marked_and_counted_apart(support: Client, settings: Any) -> None:
    never_arrived = unknown(age=timedelta(seconds=settings.PAYMENT_RECONCILE_AFTER_S + 1))
    support.post(f"{CHANGELIST}{never_arrived.pk}/reconcile/")

    body = change_page(support, never_arrived)

    assert "0 charge attempts reached the provider; 1 lookup" in body
    assert body.count("lookup (asks; never charges)") == 1
    assert 'class="ps-attempt ps-lookup"' in body


def test_raw_exception_text_of_older_rows_is_never_shown(support: Client) -> None:
    raw = "HTTPConnectionPool(host='10.1.2.3', port=8443): Max retries exceeded with url: /v1/charges"
    txn = failed(error_code="provider_connection_error", error_message=raw)
    PaymentAttempt.objects.create(
        transaction=txn,
        number=1,
        started_at=timezone.now(),
        duration_ms=3,
        outcome="provider_connection_error",
        reached_provider=False,
        message=raw,
    )

    body = change_page(support, txn)

    assert "HTTPConnectionPool" not in body and "10.1.2.3" not in body and "8443" not in body
    assert body.count("could not open a connection to the provider; nothing was sent") == 3, (
        "error message, banner and attempt row"
    )


def test_every_date_in_one_format_in_the_configured_time_zone(support: Client, settings: Any) -> None:
    settings.TIME_ZONE = "Europe/Berlin"
    txn = failed(next_retry_at=datetime(2026, 1, 15, 9, 30, tzinfo=UTC))
    Transaction.objects.filter(pk=txn.pk).update(created_at=datetime(2026, 1, 15, 8, 0, tzinfo=UTC))

    listing = support.get(CHANGELIST).content.decode()
    page = change_page(support, txn)

    for body in (listing, page):
        assert "2026-01-15 09:00:00 CET" in body, "created, in Berlin time"
        assert "2026-01-15 10:30:00 CET" in body, "next retry"
        assert not re.search(r"\b(a|p)\.m\.|\b\d{1,2}:\d\d (AM|PM)\b", body), "no second format"


def test_currency_filter_lists_only_currencies_in_use(support: Client) -> None:
    failed()
    charge("tok_visa", currency="EUR")

    body = support.get(CHANGELIST, {"status": "all"}).content.decode()

    assert set(re.findall(r"currency=([A-Z]{3})", body)) == {"USD", "EUR"}


def test_needs_attention_counts_on_the_index_link_to_their_lists(support: Client, settings: Any) -> None:
    to_reconcile = unknown(age=timedelta(minutes=11))
    abandoned = stale_pending(age=timedelta(minutes=11))
    unknown(age=timedelta(seconds=1))  # may still be in flight: not yet
    overdue = failed(next_retry_at=timezone.now() - timedelta(minutes=30))
    failed(next_retry_at=timezone.now() - timedelta(minutes=2))  # the job may just be about to run
    review = failed(attempts=6, next_retry_at=None, review_reason="not charged after 6 tries")
    charge("tok_visa")
    charged_late = charge("tok_visa")
    Transaction.objects.filter(pk=charged_late.pk).update(review_reason="charged after cancel")

    index = support.get("/admin/").content.decode()

    counts = dict(re.findall(r'data-attention="(\w+)"><strong>(\d+)</strong>', index))
    assert counts == {"reconcile": "2", "overdue": "1", "review": "1", "charged_late": "1"}
    for key, expected in (
        ("reconcile", {to_reconcile, abandoned}),
        ("overdue", {overdue}),
        ("review", {review}),
        ("charged_late", {charged_late}),
    ):
        listed = support.get(CHANGELIST, {"attention": key})
        assert set(listed.context["cl"].result_list) == expected, key


def test_index_shows_no_counts_to_staff_who_cannot_see_payments(transactional_db: None) -> None:
    get_user_model().objects.create_user("staff", password="pw-staff", is_staff=True)
    client = Client()
    client.login(username="staff", password="pw-staff")

    assert "needs-attention" not in client.get("/admin/").content.decode()


def test_support_reads_the_provider_events_but_cannot_change_them(support: Client) -> None:
    from payments.models import ProviderEvent

    txn = charge("tok_visa")
    event = ProviderEvent.objects.create(
        webhook_id="msg_1",
        type="charge.succeeded",
        sent_at=txn.created_at,
        effect="unchanged",
        transaction=txn,
    )

    listed = support.get("/admin/payments/providerevent/")
    assert listed.status_code == 200 and b"msg_1" in listed.content
    page = support.get(f"/admin/payments/providerevent/{event.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert (
        support.post(f"/admin/payments/providerevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert ProviderEvent.objects.filter(pk=event.pk).exists()
