"""The schema's examples and links: a generated client or schemathesis that starts from them
makes a charge that succeeds, and follows real ids to the operations that take them."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from rest_framework.test import APIClient

from fakeprovider import FakeProvider
from tests.support.api import answer_to


@pytest.fixture
def schema(api: APIClient) -> dict[str, Any]:
    return api.get("/api/schema/?format=json").json()


def create_operation(schema: dict[str, Any]) -> dict[str, Any]:
    return schema["paths"]["/api/v1/charges"]["post"]


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The schema with its $refs to components followed, so a validator can read it alone."""
    return {**node, "components": schema["components"]}


def test_the_request_example_is_valid_and_charges(api: APIClient, schema: dict[str, Any]) -> None:
    content = create_operation(schema)["requestBody"]["content"]["application/json"]
    examples = [example["value"] for example in content["examples"].values()]
    validator = OAS31Validator(resolve(schema, content["schema"]))
    assert examples

    for example in examples:
        assert validator.is_valid(example), example
        response = api.post("/api/v1/charges", example, format="json")
        assert (response.status_code, response.json()["status"]) == (201, "succeeded")


def test_the_fields_name_a_token_that_charges(schema: dict[str, Any]) -> None:
    properties = schema["components"]["schemas"]["ChargeCreateRequest"]["properties"]

    assert properties["source"]["examples"] == ["tok_visa"]
    assert properties["currency"]["examples"] == ["USD"]


LINKED = {
    "201": "succeeded",
    "402": "declined",
    "422": "rejected",
    "502": "retry_scheduled",
    "504": "outcome_unknown",
}


def pointer(body: Any, expression: str) -> Any:
    prefix = "$response.body#/"
    assert expression.startswith(prefix)
    for part in expression.removeprefix(prefix).split("/"):
        body = body[int(part)] if isinstance(body, list) else body[part]
    return body


@pytest.mark.parametrize("status", LINKED)
def test_each_link_from_a_charge_leads_to_that_charge(
    api: APIClient, fake_provider: FakeProvider, settings: Any, schema: dict[str, Any], status: str
) -> None:
    links = create_operation(schema)["responses"][status]["links"]
    response = answer_to(api, fake_provider, settings, LINKED[status])
    assert str(response.status_code) == status

    assert {link["operationId"] for link in links.values()} == {
        "charges_retrieve",
        "charges_cancel",
        "refunds_create",
        "refunds_list",
    }
    charge_id = pointer(response.json(), links["charges_retrieve"]["parameters"]["transaction_id"])
    assert api.get(f"/api/v1/charges/{charge_id}").json()["id"] == charge_id
    cancel_id = pointer(response.json(), links["charges_cancel"]["parameters"]["transaction_id"])
    cancel = api.post(f"/api/v1/charges/{cancel_id}/cancel")
    assert cancel.status_code in (200, 409), "the charge exists: canceled, or not cancelable"
    refunds_id = pointer(response.json(), links["refunds_list"]["parameters"]["transaction_id"])
    assert api.get(f"/api/v1/charges/{refunds_id}/refunds").status_code == 200


def test_the_link_from_a_page_leads_to_its_first_charge(api: APIClient, schema: dict[str, Any]) -> None:
    link = schema["paths"]["/api/v1/charges"]["get"]["responses"]["200"]["links"]["charges_retrieve"]
    created = api.post(
        "/api/v1/charges", {"amount": 1, "currency": "USD", "source": "tok_visa"}, format="json"
    )

    charge_id = pointer(api.get("/api/v1/charges").json(), link["parameters"]["transaction_id"])

    assert charge_id == created.json()["id"]
