"""Fuzz the API against its own OpenAPI schema (schemathesis), over HTTP with a token.

Short here (FUZZ_MAX_EXAMPLES, default 10 per operation); `make fuzz` runs it longer.
Every check schemathesis has runs (no 5xx; every status, header and body as the schema
says) but the two that judge our validation against what JSON Schema can express:
`negative_data_rejection` (DRF is lenient by design: it reads `"description": 0` as "0")
and `positive_data_acceptance` (a schema-valid token the provider does not know is rightly
refused by the provider with 422, and the schema cannot say that metadata keys are at most
40 characters, so schemathesis generates longer ones). Validation itself is tested case by
case in tests/payments/test_api.py.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis import checks

FUZZ_MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "10"))


# The schema is read from the app in-process at collection (it needs no database); the requests go to
# a live server. (schemathesis.pytest.from_fixture, the lazy loader, fails on pytest 9: it sets
# `Function._nodeid`, which pytest no longer has.)
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


@pytest.fixture
def token_header(api_user_token: tuple[Any, str]) -> dict[str, str]:
    return {"Authorization": f"Token {api_user_token[1]}"}


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=FUZZ_MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_answers_every_generated_request_as_its_schema_says(
    case: Any, live_server: Any, token_header: dict[str, str]
) -> None:
    case.call_and_validate(
        base_url=live_server.url,
        headers=token_header,
        excluded_checks=[checks.negative_data_rejection, checks.positive_data_acceptance],
    )
