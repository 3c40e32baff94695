"""DRF authtoken's plaintext tokens, moved by migration 0002, keep working and leave no plaintext behind."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apikeys.models import APIKey

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("apikeys", "0001_initial")]
AFTER = [("apikeys", "0002_import_legacy_tokens")]


def migrate(targets: list[tuple[str, str]]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


@pytest.fixture
def before_migration(transactional_db: None) -> Any:
    migrate(BEFORE)
    yield
    migrate(AFTER)  # the test database as the other tests expect it


def test_a_legacy_token_keeps_working_stored_hashed(before_migration: None) -> None:
    shop = get_user_model().objects.create_user(username="shop")
    other = get_user_model().objects.create_user(username="other")
    legacy = Token.objects.create(user=shop)
    Token.objects.filter(pk=legacy.pk).update(created=datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    other_key = Token.objects.create(user=other).key

    migrate(AFTER)

    assert not Token.objects.exists(), "the plaintext rows are deleted"
    migrated = APIKey.objects.get(user=shop)
    assert (migrated.prefix, migrated.name, migrated.revoked) == (legacy.key[:8], "legacy token", False)
    assert migrated.created == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {connection.ops.quote_name(APIKey._meta.db_table)}")
        stored = " ".join(str(value) for row in cursor.fetchall() for value in row)
    assert legacy.key not in stored and other_key not in stored

    for key, username in ((legacy.key, "shop"), (other_key, "other")):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        assert client.get("/api/v1/charges").status_code == 200
        assert APIKey.objects.get(user__username=username).last_used_at is not None


def test_the_migration_skips_a_database_without_legacy_tokens(before_migration: None) -> None:
    migrate(AFTER)

    assert not APIKey.objects.exists()
