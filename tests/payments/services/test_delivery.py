"""Delivering events over real HTTP and TLS, to a receiver on loopback: signatures, order,
retries, timeouts (a trickling answer cut at the request's deadline), redirects never followed,
certificates verified, SSRF at delivery, a name lookup that gets no answer, disabling, and two
workers on one outbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections
from django.utils import timezone

from payments import services
from payments.models import ClientEvent, DeliveryAttempt, EventDelivery, WebhookEndpoint
from payments.services import ActionOutcome, delivery
from tests.support.factories import charge, shop
from tests.support.network import HANGING_HOST, HangingResolver
from tests.support.receiver import Receiver
from tests.support.tls import TestCA

pytestmark = pytest.mark.django_db(transaction=True)

TYPES = list(services.client_events.EVENT_TYPES)


@pytest.fixture(autouse=True)
def event_settings(settings: Any) -> Any:
    settings.EVENTS_ALLOW_PRIVATE_URLS = True
    settings.EVENTS_TIMEOUT_MS = 300
    settings.EVENTS_RETRY_BASE_MS = 0  # a failed delivery is due again at once (each pass tries it once)
    settings.EVENTS_DISABLE_AFTER_FAILURES = 0
    return settings


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.make(tmp_path_factory.mktemp("trusted"))


@pytest.fixture(scope="module")
def untrusted_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.make(tmp_path_factory.mktemp("untrusted"), name="a CA nobody trusts")


def drain() -> list[Any]:
    """One pass, as run_worker makes it: every due delivery tried at most once."""
    tried: set[Any] = set()
    results = []
    while (result := services.deliver_next(skip_ids=tried, actor="test")) is not None:
        tried.add(result.transaction_id)
        results.append(result)
    return results


def hook(url: str, *, client: Any = None) -> WebhookEndpoint:
    return services.endpoint_create(client=client or shop(), url=url, events=TYPES)


def event_ids(endpoint: WebhookEndpoint) -> list[str]:
    return list(endpoint.deliveries.order_by("sequence").values_list("event_id", flat=True))


def test_events_arrive_signed_in_order_once(receiver: Receiver) -> None:
    endpoint = hook(receiver.url)
    charge("tok_visa")
    charge("tok_chargeDeclined")
    drain()

    assert [r.verified(endpoint.secret)["id"] for r in receiver.requests] == event_ids(endpoint)
    assert [r.headers["webhook-id"] for r in receiver.requests] == event_ids(endpoint)
    first = receiver.requests[0].verified(endpoint.secret)
    assert first["type"] == "charge.succeeded" and first == ClientEvent.objects.get(pk=first["id"]).payload
    assert receiver.requests[0].path == "/hooks/paymentsite"
    assert set(endpoint.deliveries.values_list("status", "attempts")) == {(EventDelivery.Status.SUCCEEDED, 1)}


def test_an_endpoint_down_for_a_while_then_back_gets_each_event_once_in_order() -> None:
    with Receiver() as first:
        port = first.port
    endpoint = hook(f"http://127.0.0.1:{port}/hooks")  # nothing listens there now
    for source in ("tok_visa", "tok_chargeDeclined", "tok_visa"):
        charge(source)
    for _ in range(3):
        (result,) = drain()  # only the first event is tried: the next wait behind it
        assert result.outcome == ActionOutcome.FAILED
    head = endpoint.deliveries.get(sequence=1)
    assert head.attempts == 3 and "Connection" in head.last_error
    assert endpoint.deliveries.filter(attempts=0).count() == 2

    with Receiver(port=port) as back:
        drain()
        assert [body["id"] for body in back.bodies()] == event_ids(endpoint)
    assert set(endpoint.deliveries.values_list("status", flat=True)) == {EventDelivery.Status.SUCCEEDED}
    assert head.attempt_log.count() == 4


def test_500s_are_retried_with_backoff(receiver: Receiver, settings: Any) -> None:
    settings.EVENTS_RETRY_BASE_MS = 60_000
    receiver.mode = "500"
    endpoint = hook(receiver.url)
    charge("tok_visa")
    (result,) = drain()
    row = endpoint.deliveries.get()
    assert (result.outcome, row.status, row.last_error) == (ActionOutcome.FAILED, "pending", "HTTP 500")
    assert row.next_attempt_at > timezone.now() + timedelta(seconds=50), "backs off"
    assert drain() == [], "not due yet"

    receiver.mode = "ok"
    EventDelivery.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    drain()
    assert endpoint.deliveries.get().status == EventDelivery.Status.SUCCEEDED
    assert len(receiver.requests) == 2


def test_a_hanging_endpoint_times_out_and_no_connection_is_held_during_the_call(receiver: Receiver) -> None:
    receiver.mode = "hang"
    endpoint = hook(receiver.url)
    charge("tok_visa")
    held: list[bool] = []
    ours = connections["default"]  # this thread's connection, looked at from the receiver's thread
    receiver.on_request = lambda _request: held.append(ours.connection is not None)

    (result,) = drain()
    receiver.release.set()

    assert held == [False], "the database connection was closed before the request"
    assert result.outcome == ActionOutcome.FAILED
    assert "ReadTimeout" in endpoint.deliveries.get().last_error


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_address_is_not_followed_and_is_a_failure(
    receiver: Receiver, status: int
) -> None:
    receiver.mode, receiver.redirect_status = "redirect", status
    endpoint = hook(receiver.url)
    charge("tok_visa")
    with Receiver() as elsewhere:  # another address: where a redirect would take the event
        receiver.redirect_to = elsewhere.url
        (result,) = drain()
        assert elsewhere.requests == [], "never followed"
    assert result.outcome == ActionOutcome.FAILED
    assert [r.path for r in receiver.requests] == ["/hooks/paymentsite"], "sent once, where it was registered"
    row = endpoint.deliveries.get()
    assert row.status == "pending" and row.last_error == f"HTTP {status}: a redirect, not followed"
    attempt = row.attempt_log.get()
    assert (attempt.http_status, attempt.error) == (status, row.last_error)


def test_a_name_that_resolves_to_loopback_is_refused_at_delivery(receiver: Receiver, settings: Any) -> None:
    endpoint = hook(f"https://localhost:{receiver.port}/hooks")  # allowed while private URLs are
    charge("tok_visa")
    settings.EVENTS_ALLOW_PRIVATE_URLS = False
    (result,) = drain()
    assert result.outcome == ActionOutcome.FAILED
    assert receiver.requests == []
    assert "not public" in endpoint.deliveries.get().last_error


def test_a_name_that_gets_no_answer_fails_the_delivery_at_the_bound_and_it_goes_later(
    receiver: Receiver, hanging_resolver: HangingResolver
) -> None:
    hanging_resolver.release()
    endpoint = hook(f"http://{HANGING_HOST}:{receiver.port}/hooks")  # resolved: 127.0.0.1
    charge("tok_visa")
    hanging_resolver.go_silent()

    (result,) = drain()
    assert result.outcome == ActionOutcome.FAILED and receiver.requests == []
    row = endpoint.deliveries.get()
    assert (row.status, row.last_error) == (
        "pending",
        f"refused: The host '{HANGING_HOST}' did not resolve within 0.3 s.",
    )
    assert delivery.lease_s() == 0.3 + delivery.request_deadline_s() + 30

    hanging_resolver.release()
    (result,) = drain()
    assert result.outcome == ActionOutcome.SUCCEEDED
    assert [r.headers["webhook-id"] for r in receiver.requests] == [row.event_id]
    assert receiver.requests[0].headers["host"] == f"{HANGING_HOST}:{receiver.port}"


def test_an_endpoint_failing_n_times_in_a_row_is_disabled(
    receiver: Receiver, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.EVENTS_DISABLE_AFTER_FAILURES = 3
    receiver.mode = "500"
    endpoint = hook(receiver.url)
    charge("tok_visa")
    for _ in range(3):
        drain()
    endpoint.refresh_from_db()
    assert not endpoint.enabled and "3 failed deliveries in a row" in endpoint.disabled_reason
    assert any(getattr(r, "event", "") == "webhook.endpoint_disabled" for r in caplog.records)
    assert drain() == [], "a disabled endpoint is sent nothing"

    receiver.mode = "ok"
    services.endpoint_update(endpoint, enabled=True)
    drain()
    assert endpoint.deliveries.get().status == EventDelivery.Status.SUCCEEDED


def test_a_delivery_failing_for_the_retry_window_is_given_up_and_the_next_one_goes(
    receiver: Receiver, settings: Any
) -> None:
    receiver.mode = "500"
    endpoint = hook(receiver.url)
    charge("tok_visa")
    charge("tok_visa")
    old = timezone.now() - timedelta(seconds=settings.EVENTS_RETRY_FOR_S + 1)
    endpoint.deliveries.filter(sequence=1).update(created_at=old)
    drain()
    assert endpoint.deliveries.get(sequence=1).status == EventDelivery.Status.FAILED
    receiver.mode = "ok"
    drain()
    assert endpoint.deliveries.get(sequence=2).status == EventDelivery.Status.SUCCEEDED


def test_after_a_rotation_both_secrets_verify_until_the_overlap_ends(
    receiver: Receiver, settings: Any
) -> None:
    endpoint = hook(receiver.url)
    old_secret = endpoint.secret
    rotated = services.endpoint_rotate(endpoint)
    charge("tok_visa")
    drain()
    (request,) = receiver.requests
    assert request.verified(old_secret) and request.verified(rotated.secret)
    assert len(request.headers["webhook-signature"].split(" ")) == 2

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(previous_secret_until=timezone.now())
    charge("tok_visa")
    drain()
    assert len(receiver.requests[1].headers["webhook-signature"].split(" ")) == 1


def test_replay_sends_the_event_again_last_in_order(receiver: Receiver) -> None:
    endpoint = hook(receiver.url)
    charge("tok_visa")
    drain()
    first = endpoint.deliveries.get()
    replay = services.delivery_replay(first, actor="support")
    assert (replay.sequence, replay.replay_of_id, replay.event_id) == (2, first.pk, first.event_id)
    drain()
    assert [r.headers["webhook-id"] for r in receiver.requests] == [first.event_id, first.event_id]


def test_two_workers_on_one_outbox_send_each_event_once_in_order(receiver: Receiver) -> None:
    client = shop()
    endpoints = [hook(f"{receiver.url}?endpoint={n}", client=client) for n in range(2)]
    for _ in range(12):
        charge("tok_visa", client=client)

    def work() -> None:
        while drain():
            pass
        connection.close()

    workers = [threading.Thread(target=work) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    for n, endpoint in enumerate(endpoints):
        sent = [r.headers["webhook-id"] for r in receiver.requests if r.path.endswith(f"endpoint={n}")]
        assert sent == event_ids(endpoint), "each event once, in sequence: none twice, none skipped"
    assert EventDelivery.objects.exclude(status=EventDelivery.Status.SUCCEEDED).count() == 0
    assert delivery.due_heads().count() == 0


def attempt_of(endpoint: WebhookEndpoint) -> DeliveryAttempt:
    return endpoint.deliveries.get().attempt_log.get()


def test_https_is_verified_against_events_ca_bundle_and_arrives_signed(
    test_ca: TestCA, settings: Any
) -> None:
    settings.EVENTS_CA_BUNDLE = str(test_ca.ca_pem)
    with Receiver(tls=test_ca.server_context()) as tls_receiver:
        endpoint = hook(tls_receiver.url)
        charge("tok_visa")
        (result,) = drain()
    assert tls_receiver.url.startswith("https://127.0.0.1:")
    assert result.outcome == ActionOutcome.SUCCEEDED, result
    (request,) = tls_receiver.requests
    event = request.verified(endpoint.secret)  # standardwebhooks, as the client would
    assert event == ClientEvent.objects.get(pk=request.headers["webhook-id"]).payload
    assert (attempt_of(endpoint).http_status, attempt_of(endpoint).error) == (204, "")


@pytest.mark.parametrize("case", ["another-ca", "default-bundle", "another-host"])
def test_a_certificate_not_trusted_fails_the_delivery_retryably_with_its_reason(
    test_ca: TestCA, untrusted_ca: TestCA, tmp_path: Path, settings: Any, case: str
) -> None:
    """The server's leaf is signed by a CA EVENTS_CA_BUNDLE does not hold; or by the test CA with
    EVENTS_CA_BUNDLE unset (the bundle production uses, certifi's, trusts no test CA); or by a
    trusted CA, for another address than the one connected to (127.0.0.2)."""
    other_host = TestCA.make(tmp_path, leaf_ip="127.0.0.2")
    server, bundle, reason = {
        "another-ca": (untrusted_ca, test_ca.ca_pem, "CERTIFICATE_VERIFY_FAILED"),
        "default-bundle": (test_ca, None, "CERTIFICATE_VERIFY_FAILED"),
        "another-host": (other_host, other_host.ca_pem, "hostname '127.0.0.1' doesn't match '127.0.0.2'"),
    }[case]
    settings.EVENTS_CA_BUNDLE = str(bundle) if bundle else None
    with Receiver(tls=server.server_context()) as tls_receiver:
        endpoint = hook(tls_receiver.url)
        charge("tok_visa")
        (result,) = drain()
    assert tls_receiver.requests == [], "nothing sent to a server not verified"
    assert result.outcome == ActionOutcome.FAILED
    row = endpoint.deliveries.get()
    assert row.status == EventDelivery.Status.PENDING and row.next_attempt_at is not None, "tried again"
    attempt = row.attempt_log.get()
    assert attempt.http_status is None
    assert attempt.error.startswith("SSLError: ") and reason in attempt.error, attempt.error
    assert row.last_error == attempt.error
    if case != "another-host":  # the chain is refused in the handshake; a host name after it
        assert tls_receiver.handshake_failures, "the client broke the handshake off"


def wait_for(items: list[str]) -> list[str]:
    """`items` once the receiver has put something in it (whatever the time it took)."""
    for _ in range(3000):
        if items:
            return items
        time.sleep(0.01)
    raise AssertionError("the receiver never finished its answer")


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_an_endpoint_trickling_its_answer_is_cut_at_the_requests_deadline(
    test_ca: TestCA, settings: Any, scheme: str
) -> None:
    """Each byte comes well within the read timeout (urllib3's timeouts are per read), the whole
    answer would take 0.05 s x 200: the request's hard bound closes the connection first, so no
    delivery outlives its lease (and the 200 at the end is never taken for a success)."""
    settings.EVENTS_CA_BUNDLE = str(test_ca.ca_pem)
    tls = test_ca.server_context() if scheme == "https" else None
    with Receiver(tls=tls) as trickling:
        trickling.mode = "trickle"
        endpoint = hook(trickling.url)
        charge("tok_visa")
        (result,) = drain()
        assert wait_for(trickling.trickled) == ["cut"], "the client closed the connection mid-answer"
    assert result.outcome == ActionOutcome.FAILED, "recorded: the lease was still this worker's"
    row = endpoint.deliveries.get()
    expected = f"no answer within {delivery.request_deadline_s():g} s: the connection was closed"
    assert row.status == EventDelivery.Status.PENDING and row.last_error == expected
    assert attempt_of(endpoint).error == expected and attempt_of(endpoint).http_status is None
    assert delivery.request_deadline_s() < delivery.lease_s()


def test_a_2xx_whose_body_trickles_is_a_success_cut_at_the_deadline(receiver: Receiver) -> None:
    """The status line is the answer: the body cut short at the bound changes nothing (sending the
    event again would only make the endpoint receive it twice)."""
    receiver.mode = "trickle_body"
    endpoint = hook(receiver.url)
    charge("tok_visa")
    (result,) = drain()
    assert wait_for(receiver.trickled) == ["cut"]
    assert result.outcome == ActionOutcome.SUCCEEDED, result
    assert (attempt_of(endpoint).http_status, attempt_of(endpoint).error) == (200, "")
