"""The key lookup every API request makes: one statement, the key's row and its user."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apikeys.models import APIKey

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_key_is_found_with_its_user_in_one_statement_and_the_users_other_fields_on_use() -> None:
    user = get_user_model().objects.create_user(username="shop", email="shop@example.test")
    other = get_user_model().objects.create_user(username="other")
    stored, key = APIKey.objects.issue(user, "main")
    APIKey.objects.issue(other, "theirs")
    with CaptureQueriesContext(connection) as queries:
        found = APIKey.objects.matching(key)
        assert found is not None
        assert (found.user.pk, found.user.get_username(), found.user.is_active) == (user.pk, "shop", True)
    assert len(queries) == 1
    expected = {field.attname: getattr(stored, field.attname) for field in APIKey._meta.concrete_fields}
    assert {name: getattr(found, name) for name in expected} == expected
    assert found.user.email == "shop@example.test"  # read when first used


def test_an_inactive_users_key_is_found_inactive_and_a_wrong_secret_with_its_prefix_is_not() -> None:
    user = get_user_model().objects.create_user(username="gone", is_active=False)
    _, key = APIKey.objects.issue(user, "main")
    found = APIKey.objects.matching(key)
    assert found is not None and found.user.is_active is False
    assert APIKey.objects.matching(key[:-1] + ("a" if key[-1] != "a" else "b")) is None
