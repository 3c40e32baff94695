from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from payments.fake_provider import FakeProvider
from payments.models import Transaction
from payments.services import SUPPORT_GROUP_NAME
from tests.payments.factories import charge, failed, shop, stale_pending, unknown

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/payments/transaction/"
Status = Transaction.Status


@pytest.fixture
def support(transactional_db: None) -> Client:
    call_command("create_support_user", "alice", "--password", "pw-alice", stdout=io.StringIO())
    client = Client()
    assert client.login(username="alice", password="pw-alice")
    return client


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
