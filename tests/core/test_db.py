"""core.db's raw reads: every column of a model in one statement, and related rows read once."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.db import db_value, select_sql, set_prefetched
from payments.models import Refund, Transaction
from tests.support.factories import charge, refund

pytestmark = pytest.mark.django_db(transaction=True)


def test_select_sql_reads_every_field_as_the_orm_does() -> None:
    txn = charge("tok_visa")
    sql = select_sql(Transaction, "WHERE t.id = %s")
    [row] = Transaction.objects.raw(sql, [db_value(Transaction, "id", txn.pk)])
    orm = Transaction.objects.get(pk=txn.pk)
    assert row.get_deferred_fields() == set()
    assert {f.attname: getattr(row, f.attname) for f in Transaction._meta.concrete_fields} == {
        f.attname: getattr(orm, f.attname) for f in Transaction._meta.concrete_fields
    }


def test_related_rows_set_once_are_read_with_no_query_and_a_queryset_made_from_them_queries() -> None:
    txn = charge("tok_visa")
    refund(txn, 100)
    txn = Transaction.objects.get(pk=txn.pk)
    set_prefetched(txn, "refunds", [])
    with CaptureQueriesContext(connection) as queries:
        assert list(txn.refunds.all()) == []
    assert len(queries) == 0
    assert [r.amount for r in txn.refunds.order_by("-created_at")] == [100]  # the database's rows
    assert Refund.objects.filter(transaction=txn).count() == 1
