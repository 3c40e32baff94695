"""A fake payment provider: a real HTTP server on loopback that speaks the provider contract.

    python -m fakeprovider --port 8099

Stdlib only, so it runs without Django or the project's dependencies. It is hand-written rather
than built on a mock-server library because it must act on the wire: hold an answer past a read
timeout, or close the TCP connection after acting on a request without answering it.

The contract: `POST /v1/charges` (Bearer key, `Idempotency-Key`, JSON `{amount, currency,
source, reference, description}`) answers 200 with the charge (`id`, `status`, `amount`,
`currency`, `reference`, `idempotency_key`, `created`), 402 with a decline, 400/401 for a
bad request or key, 409 while the same key is still being processed, 429 or 5xx; the same key
with the same body answers the first final result and never charges again.
`GET /v1/charges/{key}` answers the charge made with that key, or 404 with the error code
`resource_missing` if none is made *yet*; an unrecognized path is a 404 without that code.

Refunds: `POST /v1/charges/{charge_key}/refunds` (Bearer key, the refund's own
`Idempotency-Key`, JSON `{amount}`) answers 200 with the refund (`id` "re_...", `status`
succeeded/pending/failed, `amount`, `charge`, `created`); 404 `resource_missing` for a charge
not made (yet); 400 `amount_exceeds_remaining` for more than is left (succeeded, pending and
in-flight refunds count) and `charge_not_refundable` for a declined charge; 400
`idempotency_error` for the refund key with another amount or charge; 409 while in flight.
`GET /v1/charges/{charge_key}/refunds/{refund_key}` answers the refund or 404 `resource_missing`.

Behaviour is chosen by the charge's `source` token, like a card network's test cards:
`tok_visa` succeeds; `tok_chargeDeclined`, `tok_insufficientFunds` decline; `tok_timeout`
charges at once but holds every answer for that key for `--timeout-window-s`; `tok_flaky`
answers 503 twice per key; `tok_rateLimited` answers 429 once; `tok_error` always 500.

Faults are queued from Python (`inject`, `inject_many`, `clear_faults`) or over HTTP, and each
applies once, first in first out, to the next request that matches it: `"on"` is "charge"
(default), "lookup", "refund" or "refund_lookup", and `"key"`, if given, limits it to that
idempotency key (the refund's own key on refunds and refund lookups).

    {"kind": "hold", "ms": 500}          act normally, then wait before answering
    {"kind": "slow", "ms": 500}          key in progress while waiting, then charge and answer
    {"kind": "drop_after"}               act normally, then close the connection unanswered
    {"kind": "drop_before"}              close the connection unanswered, acting on nothing
    {"kind": "status", "status": 503, "retry_after": 1}   that error status, acting on nothing;
        retry_after may also be any Latin-1 string, sent as it is (e.g. "²", a junk value)
    {"kind": "garbage", "variant": "long_id"}   act normally, then answer 200 with an unusable
        body: not_json, long_id (300 characters), bad_id, bad_status, missing_id,
        deep_json (50 000 nested lists), not_object (a JSON list)
    {"kind": "trickle", "ms": 50}        act normally, then send the whole answer (status line,
        headers, body) one byte every 50 ms, until it is out or the client hangs up: every gap
        is shorter than a read timeout, so only a bound on the whole attempt stops it.
        `FakeProvider.trickles()` lists each: bytes sent, total, and whether the client hung up
    {"kind": "proxy_404"}                an HTML 404 page (text/html) as a proxy with no route
        would send, acting on nothing
    {"kind": "redirect", "location": "https://elsewhere.example/"}   a 302 to that location,
        acting on nothing; by default to /v1/charges/moved-elsewhere on this host, a lookup
        that answers 404 resource_missing, so a client that follows it hears "no such charge"
    {"kind": "delayed_commit", "ms": 5000}   a charge only: the charge is made as usual, but
        lookups of its key answer 404 resource_missing for 5000 ms after it was made (a commit
        not yet visible); not an answer of its own, the same request goes on under the next
        matching fault (queue it before a `trickle` or `drop_after` for the issue-18 path)
    {"kind": "other_charge", "variant": "all"}   act normally, then answer 200 `succeeded` for
        another charge: amount (1 instead of the amount asked), currency (JPY), key (another
        idempotency_key and reference) or all (the default)

Lookups take `status`, `drop_before`, `hold`, `garbage`, `trickle`, `proxy_404`, `redirect` and
`other_charge`.
Refunds take the charge's kinds (a refund made where a charge would be charged), with
`other_refund` for `other_charge`, and:

    {"kind": "other_refund", "variant": "all"}   act normally, then answer 200 for another
        refund: amount (1), charge (another charge's id) or all (the default)
    {"kind": "refund_pending", "ms": 5000, "variant": "failed"}   the refund is made pending and
        settles as the variant (succeeded by default, or failed) 5000 ms later; not an answer of
        its own, as delayed_commit
    {"kind": "refund_failed"}            the refund is made failed; not an answer of its own

Refund lookups take the lookup's kinds, with `other_refund` for `other_charge`.
Events: with `events_url` (and `events_secret`, `whsec_...`) it posts a Standard Webhooks event
for each charge it makes and each refund once succeeded or failed, under `"on": "event"` faults
(duplicate, delay, reorder, bad_signature, stale); see fakeprovider/events.py.

Control endpoints (no key needed):
`GET /_fake/charges` (charges per key), `GET /_fake/ledger` (each charge made, per key, and when each
was committed),
`GET /_fake/refunds` (each refund made, per charge key), `POST /_fake/refunds/settle`
(`{"refund_key", "status"}`: settle a pending refund now),
`GET|POST|DELETE /_fake/faults` (pending and applied faults; queue `{"faults": [...]}`; clear),
`POST /_fake/faults/clear`, and `POST /_fake/reset`, which forgets charges, refunds and faults.
"""

from fakeprovider.protocol import Fault
from fakeprovider.provider import FakeProvider

__all__ = ["FakeProvider", "Fault"]
