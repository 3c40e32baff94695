from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token

from payments.fake_provider import FakeProvider
from payments.models import Transaction
from payments.services import SUPPORT_GROUP_NAME
from tests.payments.factories import charge, failed, shop

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

    response = support.get(CHANGELIST)

    assert response.status_code == 200
    body = response.content.decode()
    assert str(down.pk) in body and str(done.pk) not in body
    for text in ("19.99 USD", "provider_connection_error", "shop", "Retry selected", "Cancel…"):
        assert text in body
    everything = support.get(f"{CHANGELIST}?status=all").content.decode()
    assert str(down.pk) in everything and str(done.pk) in everything


def test_search_by_transaction_id_finds_it_whatever_its_status(support: Client) -> None:
    done = charge("tok_visa")

    response = support.get(CHANGELIST, {"q": str(done.pk)})

    assert list(response.context["cl"].result_list) == [done]


def test_needs_review_filter_shows_only_failed_rows_without_a_retry(support: Client) -> None:
    review = failed(attempts=6, next_retry_at=None)
    due = failed()

    response = support.get(CHANGELIST, {"needs_review": "yes"})

    assert list(response.context["cl"].result_list) == [review]
    assert due not in response.context["cl"].result_list


def test_change_page_shows_attempts_read_only(support: Client) -> None:
    txn = charge("tok_flaky")

    response = support.get(f"{CHANGELIST}{txn.pk}/change/")

    assert response.status_code == 200
    body = response.content.decode()
    assert "19.99 USD" in body and body.count("provider_error") >= 2
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

    response = act(support, "retry_selected", will_succeed, keeps_failing, canceled, query="?status=all")

    assert messages_of(response) == ["Retry selected: 1 succeeded, 1 failed, 1 skipped."]
    assert Transaction.objects.get(pk=will_succeed.pk).status == Status.SUCCEEDED
    assert fake_provider.charge_count(will_succeed.provider_idempotency_key) == 1
    logged = LogEntry.objects.filter(user__username="alice").values_list("object_id", "change_message")
    assert sorted(logged) == sorted(
        [
            (str(will_succeed.pk), "Retry: succeeded."),
            (str(keeps_failing.pk), "Retry: failed. An internal error occurred."),
        ]
    )


def test_reconcile_action_settles_a_timed_out_charge(
    support: Client, fake_provider: FakeProvider, settings: Any
) -> None:
    settings.PAYMENT_MAX_RETRIES = 0
    txn = charge("tok_timeout")

    response = act(support, "reconcile_selected", txn)

    assert messages_of(response) == ["Reconcile selected: 1 succeeded, 0 failed, 0 skipped."]
    assert Transaction.objects.get(pk=txn.pk).status == Status.SUCCEEDED
    assert fake_provider.request_count(txn.provider_idempotency_key) == 1
    assert LogEntry.objects.get(user__username="alice").change_message == "Reconcile: succeeded."


def test_cancel_asks_for_a_reason_then_cancels_and_logs_it(support: Client) -> None:
    txn = failed(error_type="provider_error", error_code="internal_error")
    unknown = failed(error_type="provider_timeout", error_code="provider_timeout")

    page = act(support, "cancel_selected", txn, unknown)
    assert page.status_code == 200
    assert page.templates[0].name == "admin/payments/transaction/cancel_selected.html"
    assert "skipped: the provider may have charged it; reconcile it first" in page.content.decode()
    without_reason = act(support, "cancel_selected", txn, apply="yes", reason="  ")
    assert "This field is required." in without_reason.content.decode()
    assert Transaction.objects.get(pk=txn.pk).status == Status.FAILED

    done = act(support, "cancel_selected", txn, unknown, apply="yes", reason="Paid by bank transfer")

    assert messages_of(done) == ["Canceled 1 payment(s); 1 skipped."]
    txn.refresh_from_db()
    assert (txn.status, txn.status_note) == (Status.CANCELED, "Paid by bank transfer")
    assert Transaction.objects.get(pk=unknown.pk).status == Status.FAILED
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
