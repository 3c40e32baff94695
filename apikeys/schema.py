"""The OpenAPI description of APIKeyAuthentication: either header form is accepted."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

KEY_FORMAT = "an API key from `manage.py create_api_client` (shown once at creation)"


class APIKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "apikeys.authentication.APIKeyAuthentication"
    name = ["TokenAuth", "BearerAuth"]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return [
            {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": f"`Authorization: Token <key>`, with {KEY_FORMAT}.",
            },
            {
                "type": "http",
                "scheme": "bearer",
                "description": f"`Authorization: Bearer <key>`, with {KEY_FORMAT}.",
            },
        ]

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[Any]]]:
        return [{"TokenAuth": []}, {"BearerAuth": []}]  # either one
