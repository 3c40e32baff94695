"""Events out in the admin: support sees deliveries and replays one; nobody sees a secret."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.test import Client

from payments.models import EventDelivery, WebhookEndpoint
from tests.support.factories import charge, shop

pytestmark = pytest.mark.django_db(transaction=True)


def test_support_replays_a_delivery_and_never_sees_the_secret(support: Client) -> None:
    endpoint = WebhookEndpoint.objects.create(
        client=shop(), url="https://8.8.8.8/hooks", events=["charge.succeeded"]
    )
    charge("tok_visa", client=endpoint.client)
    delivery = EventDelivery.objects.get()

    listed = support.get("/admin/payments/eventdelivery/")
    assert listed.status_code == 200 and delivery.pk in listed.content.decode()
    # The admin's own quoting: a raw "we_22…" would read as 'we"…' (admin.utils.unquote).
    page = support.get(f"/admin/payments/webhookendpoint/{quote(endpoint.pk)}/change/")
    assert page.status_code == 200 and endpoint.secret not in page.content.decode()

    answer = support.post(
        "/admin/payments/eventdelivery/", {"action": "replay", "_selected_action": [delivery.pk]}, follow=True
    )
    assert answer.status_code == 200
    assert list(endpoint.deliveries.values_list("sequence", "replay_of")) == [(1, None), (2, delivery.pk)]
