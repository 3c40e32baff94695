"""API keys, hashed at rest, several per client, each with a name, last use, revocation and expiry.

Built on djangorestframework-api-key: its abstract model (prefix, SHA-512 hash, name,
`revoked`, `expiry_date`), key generator and admin. That library authorizes a request
without naming a user, and this API charges `request.user`, so the key belongs to a user
here and `apikeys.authentication` turns a key into that user. django-rest-knox does set
the user, but it has no name, revocation flag or last-used time, and it reads all of a
user's tokens on every request to delete expired ones.

A key is `<8-character prefix>.<32-character secret>`; only the prefix (shown to support in
the admin) and the hash of the whole key are stored. Tokens from DRF's old authtoken table
(40 hex characters, no dot) were moved in by migration 0002 with their first 8 characters
as the prefix, so the lookup is always "the first 8 characters, then compare the hash".
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections, models
from django.db.models import Q
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey, BaseAPIKeyManager

from core.db import select_sql

PREFIX_LENGTH = 8
# A key's last use is written at most this often, so the charge path does not gain a write per request.
LAST_USED_PRECISION = timedelta(minutes=1)
MAX_KEY_LENGTH = 128


class APIKeyManager(BaseAPIKeyManager):
    def issue(self, user: models.Model, name: str, expires_at: datetime | None = None) -> tuple[APIKey, str]:
        """A new key for `user`: the stored row and the key itself, which is never stored."""
        return self.create_key(user=user, name=name, expiry_date=expires_at)

    def matching(self, key: str) -> APIKey | None:
        """The key's row, whatever its state (revoked, expired), or None when no row matches."""
        if not key or len(key) > MAX_KEY_LENGTH:
            return None
        verify = self.key_generator.verify
        rows = self.raw(_matching_sql(), [key[:PREFIX_LENGTH]])
        row = next((row for row in rows if verify(key, row.hashed_key)), None)
        if row is not None:
            # The key's user with what authentication reads; any other field is read when first
            # used (a deferred field, as .only() makes).
            user = get_user_model().from_db(
                self.db,
                ["id", "username", "is_active"],
                [row.user_id, row.user_username, bool(row.user_is_active)],
            )
            APIKey.user.field.set_cached_value(row, user)
        return row


@functools.cache
def _matching_sql() -> str:
    """Every key with a prefix, with its user's username and is_active: one statement, compiled
    once (core.db.select_sql), for the lookup that every API request makes."""
    user = get_user_model()
    quote = connections["default"].ops.quote_name
    users, user_pk = quote(user._meta.db_table), quote(user._meta.pk.column)
    return select_sql(
        APIKey,
        f"INNER JOIN {users} u ON u.{user_pk} = k.{quote('user_id')} WHERE k.{quote('prefix')} = %s",
        alias="k",
        extra=f"u.{quote('username')} AS user_username, u.{quote('is_active')} AS user_is_active",
    )


class APIKey(AbstractAPIKey):
    # Not unique, unlike the library's: prefixes of migrated legacy tokens may repeat, and the
    # lookup compares the hash of every row with the prefix anyway.
    prefix = models.CharField(max_length=PREFIX_LENGTH, db_index=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys", verbose_name="client"
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False, verbose_name="last used")

    objects = APIKeyManager()

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def touch(self, now: datetime | None = None) -> None:
        """Record a use, writing only when the stored time is older than LAST_USED_PRECISION."""
        now = now or timezone.now()
        if self.last_used_at and now - self.last_used_at < LAST_USED_PRECISION:
            return
        stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_PRECISION)
        type(self).objects.filter(stale, pk=self.pk).update(last_used_at=now)
        self.last_used_at = now

    def revoke(self) -> None:
        if not self.revoked:
            self.revoked = True
            self.save(update_fields=["revoked"])

    @property
    def state(self) -> str:
        if self.revoked:
            return "revoked"
        return "expired" if self.has_expired else "active"


def active_keys_named(user: models.Model, name: str, *, exclude_pk: Any = None) -> list[APIKey]:
    """The client's active keys of this name (a client holds at most one: the CLI and the admin
    refuse another)."""
    same_name = APIKey.objects.filter(user=user, name=name)
    if exclude_pk is not None:
        same_name = same_name.exclude(pk=exclude_pk)
    return [key for key in same_name if key.state == "active"]
