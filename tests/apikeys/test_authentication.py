"""API keys: hashed at rest, several per client, revocation, expiry, last use, both header schemes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from apikeys.models import LAST_USED_PRECISION, APIKey

pytestmark = pytest.mark.django_db(transaction=True)

LIST = "/api/v1/charges"


def client_with(key: str, scheme: str = "Token") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {key}")
    return client


def assert_refused(response: Any, message: str) -> None:
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    error = response.json()["error"]
    assert (error["type"], error["retryable"]) == ("authentication_error", False)
    assert message in error["message"]


@pytest.fixture
def user(transactional_db: None) -> Any:
    return get_user_model().objects.create_user(username="shop")


def test_only_the_prefix_and_a_hash_are_stored(user: Any) -> None:
    api_key, key = APIKey.objects.issue(user, "checkout")

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {connection.ops.quote_name(APIKey._meta.db_table)}")
        stored = " ".join(str(value) for row in cursor.fetchall() for value in row)
    secret = key.partition(".")[2]
    assert len(secret) == 32 and secret not in stored and key not in stored
    assert api_key.prefix == key[:8] and api_key.prefix in stored
    assert api_key.hashed_key.startswith("sha512$$")
    assert client_with(key).get(LIST).status_code == 200


def test_a_client_holds_several_keys_and_revoking_one_keeps_the_others(user: Any) -> None:
    first, first_key = APIKey.objects.issue(user, "shop front")
    _, second_key = APIKey.objects.issue(user, "back office")

    assert client_with(first_key).get(LIST).status_code == 200
    assert client_with(second_key).get(LIST).status_code == 200
    first.revoke()

    assert_refused(client_with(first_key).get(LIST), "revoked")
    assert client_with(second_key).get(LIST).status_code == 200
    assert list(user.api_keys.values_list("name", "revoked")) == [
        ("back office", False),
        ("shop front", True),
    ]


def test_an_expired_key_is_refused_and_one_not_yet_expired_works(user: Any) -> None:
    _, expired = APIKey.objects.issue(user, "old", expires_at=timezone.now() - timedelta(seconds=1))
    _, current = APIKey.objects.issue(user, "new", expires_at=timezone.now() + timedelta(days=1))

    assert_refused(client_with(expired).post(LIST, {}, format="json"), "expired")
    assert client_with(current).get(LIST).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    ["Token abcdefgh.wrong", "Token abcdefgh", "Token a b", "Bearer " + "x" * 500, "Token"],
)
def test_wrong_or_malformed_keys_are_refused(user: Any, authorization: str) -> None:
    APIKey.objects.issue(user, "checkout")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=authorization)

    assert_refused(client.get(LIST), "")


def test_a_key_whose_secret_differs_is_refused_even_with_a_matching_prefix(user: Any) -> None:
    _, key = APIKey.objects.issue(user, "checkout")

    assert_refused(client_with(key[:-1] + ("A" if key[-1] != "A" else "B")).get(LIST), "Invalid API key")


def test_bearer_is_accepted_as_well_as_token(user: Any) -> None:
    _, key = APIKey.objects.issue(user, "checkout")

    assert client_with(key, scheme="Bearer").get(LIST).status_code == 200
    assert client_with(key, scheme="token").get(LIST).status_code == 200


def test_an_inactive_client_is_refused(user: Any) -> None:
    _, key = APIKey.objects.issue(user, "checkout")
    user.is_active = False
    user.save()

    assert_refused(client_with(key).get(LIST), "inactive")


def test_last_use_is_written_at_most_once_a_minute(user: Any) -> None:
    api_key, key = APIKey.objects.issue(user, "checkout")
    client = client_with(key)
    table = APIKey._meta.db_table

    client.get(LIST)
    api_key.refresh_from_db()
    first_use = api_key.last_used_at
    assert first_use is not None and timezone.now() - first_use < LAST_USED_PRECISION

    with CaptureQueriesContext(connection) as queries:
        assert client.get(LIST).status_code == 200
    assert not [q["sql"] for q in queries if q["sql"].startswith("UPDATE") and table in q["sql"]]
    api_key.refresh_from_db()
    assert api_key.last_used_at == first_use

    APIKey.objects.filter(pk=api_key.pk).update(last_used_at=first_use - 2 * LAST_USED_PRECISION)
    client.get(LIST)
    api_key.refresh_from_db()
    assert api_key.last_used_at >= first_use


def test_the_schema_describes_both_header_forms(api: APIClient) -> None:
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    schemes = schema["components"]["securitySchemes"]
    assert schemes["TokenAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": schemes["TokenAuth"]["description"],
    }
    assert "Token <key>" in schemes["TokenAuth"]["description"]
    assert schemes["BearerAuth"]["type"] == "http" and schemes["BearerAuth"]["scheme"] == "bearer"
    assert {"TokenAuth": []} in schema["paths"]["/api/v1/charges"]["post"]["security"]
    assert "tokenAuth" not in schemes, "DRF's plaintext token scheme is gone"
