"""`Authorization: Token <key>` (what integrations send today) or `Bearer <key>`, checked against hashed keys.

djangorestframework-api-key ships a permission class, which checks a key but leaves
`request.user` anonymous; the API charges `request.user`, so this small authentication
class uses the library's model and hashing and returns the key's user.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from apikeys.models import APIKey

SCHEMES = ("token", "bearer")


class APIKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, APIKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].decode("latin-1").lower() not in SCHEMES:
            return None  # another scheme, or none: the next authentication class decides
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Invalid Authorization header: expected 'Token <key>'.")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None

        api_key = APIKey.objects.matching(key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if api_key.revoked:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        if api_key.has_expired:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        if not api_key.user.is_active:
            raise exceptions.AuthenticationFailed("This API client is inactive.")
        api_key.touch()
        return api_key.user, api_key

    def authenticate_header(self, request: Request) -> str:
        # A 401 (not 403) for a request without credentials, naming the scheme.
        return "Token"
