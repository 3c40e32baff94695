"""Moves DRF authtoken's plaintext tokens into hashed API keys, then deletes the plaintext rows.

Each old token keeps working unchanged: it is stored as the SHA-512 hash of the whole
40-character key, with its first 8 characters as the prefix. The old table is read with
plain SQL, so this migration does not depend on `rest_framework.authtoken` being installed
(a database that never had the table is skipped). It cannot be reversed: the plaintext is gone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db import migrations
from django.utils.dateparse import parse_datetime
from rest_framework_api_key.crypto import KeyGenerator, concatenate

LEGACY_TABLE = "authtoken_token"
LEGACY_NAME = "legacy token"
PREFIX_LENGTH = 8


def _aware(created: Any) -> datetime | None:
    if isinstance(created, str):
        created = parse_datetime(created)
    if isinstance(created, datetime) and created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created


def import_legacy_tokens(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    if LEGACY_TABLE not in connection.introspection.table_names():
        return
    APIKey = apps.get_model("apikeys", "APIKey")
    quote = connection.ops.quote_name
    table = quote(LEGACY_TABLE)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {quote('key')}, {quote('user_id')}, {quote('created')} FROM {table}")
        rows = cursor.fetchall()
    generator = KeyGenerator()
    for key, user_id, created in rows:
        prefix = key[:PREFIX_LENGTH]
        hashed_key = generator.hash(key)
        api_key = APIKey.objects.create(
            id=concatenate(prefix, hashed_key),
            prefix=prefix,
            hashed_key=hashed_key,
            user_id=user_id,
            name=LEGACY_NAME,
        )
        if created := _aware(created):
            APIKey.objects.filter(pk=api_key.pk).update(created=created)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table}")


class Migration(migrations.Migration):
    dependencies = [("apikeys", "0001_initial")]

    operations = [migrations.RunPython(import_legacy_tokens, migrations.RunPython.noop, elidable=True)]
