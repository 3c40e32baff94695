"""The raw floor: the same charge as `POST /api/v1/charges`, written as a bare WSGI app.

A measuring stick, not a design. `make bench` serves it with the same gunicorn (threaded
workers, the same worker and thread counts) against the same database and fake provider as
the service, and states the service's CPU per charge and throughput as multiples of this
app's in the same run, so the machine's speed and load cancel out. Nothing here is meant to
be copied into the product: it skips everything a real service needs besides the charge
itself (logs, metrics, request ids, the breaker and bulkhead, retries, the claim fence,
replays of failed charges, the admin's fields).

Why hand-written: the point is the least code that does the charge's work, so no framework
or library may stand between the WSGI call and the database or provider sockets; any library
would be part of what the floor is meant to leave out. Per charge it does:

1. the API key lookup: the key's 8-character prefix selects its rows (joined with the
   client's user row), and the SHA-512 of the whole key is compared with each stored hash,
   as apikeys does; revoked, expired and inactive keys are refused;
2. JSON validation of the body: exactly the service's fields, types and bounds;
3. the pending row inserted and committed (the same table and unique key as the service,
   so a repeated Idempotency-Key is answered with the first charge);
4. the provider call with its own idempotency key, on this thread's kept-alive connection;
5. the attempt and the outcome in one short transaction;
6. a JSON answer.

Two database connections per process (MySQLdb, one pool per worker, opened after the
fork); a connection is held only for the short writes, never across the provider call.
Six statements per charge: the key lookup, the insert and its commit; the attempt, the
outcome and their commit.

Configuration from the environment: FLOOR_DATABASE_URL (mysql://user@host:port/name),
PAYMENT_SERVICE_URL and PAYMENT_API_KEY (the provider's), as the service reads them.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import MySQLdb

from payments.currencies import MINOR_UNIT_DIGITS

CONNECTIONS_PER_PROCESS = 2
PREFIX_LENGTH = 8
MAX_KEY_LENGTH = 128
MAX_AMOUNT = 99_999_999
MAX_IDEMPOTENCY_KEY_LENGTH = 255
PROVIDER_TIMEOUT_S = 10.0
FIELDS = {"amount", "currency", "source", "description", "metadata"}
REQUIRED = {"amount", "currency", "source"}
SOURCE = re.compile(r"tok_[A-Za-z0-9_]{1,251}")
CURRENCY = re.compile(r"[A-Z]{3}")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


class Invalid(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# The database --------------------------------------------------------------------------


def _connect() -> Any:
    url = urlsplit(os.environ["FLOOR_DATABASE_URL"])
    return MySQLdb.connect(
        host=url.hostname or "127.0.0.1",
        port=url.port or 3306,
        user=unquote(url.username or "root"),
        password=unquote(url.password or ""),
        database=url.path.lstrip("/"),
        charset="utf8mb4",
        autocommit=False,
    )


class Pool:
    """At most `size` connections, opened on first use in this process."""

    def __init__(self, size: int) -> None:
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        self._slots.acquire()
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = _connect()
            try:
                yield conn
            except MySQLdb.Error:
                conn.close()  # a broken or half-done connection is not given back
                raise
            except BaseException:
                conn.rollback()
                self._idle.put(conn)
                raise
            else:
                self._idle.put(conn)
        finally:
            self._slots.release()


# The provider ----------------------------------------------------------------------------


class Provider:
    """One kept-alive HTTP connection per thread to PAYMENT_SERVICE_URL."""

    def __init__(self) -> None:
        url = urlsplit(os.environ["PAYMENT_SERVICE_URL"])
        self.host, self.port, self.path = url.hostname or "127.0.0.1", url.port or 80, url.path
        self.authorization = f"Bearer {os.environ['PAYMENT_API_KEY']}"
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "connection", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=PROVIDER_TIMEOUT_S)
            self._local.connection = conn
        return conn

    def charge(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, the JSON answer); status 0 when no answer came."""
        payload = json.dumps(body).encode()
        headers = {
            "Authorization": self.authorization,
            "Idempotency-Key": key,
            "Content-Type": "application/json",
        }
        for _ in range(2):  # once more on a kept-alive connection the provider had closed
            conn = self._connection()
            try:
                conn.request("POST", self.path, body=payload, headers=headers)
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.connection = None
                if isinstance(exc, TimeoutError):
                    return 0, {}  # the same key is safe to send again, but a timeout is an answer here
                continue
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = {}
            return response.status, answer if isinstance(answer, dict) else {}
        return 0, {}


# The charge ------------------------------------------------------------------------------


def _authenticate(conn: Any, header: str) -> int:
    """The client's user id for `Authorization: Token <key>` (or Bearer)."""
    scheme, _, key = header.partition(" ")
    if scheme.lower() not in ("token", "bearer") or not key or len(key) > MAX_KEY_LENGTH:
        raise Invalid(401, "not_authenticated", "Authentication credentials were not provided.")
    hashed = "sha512$$" + hashlib.sha512(key.encode()).hexdigest()
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT k.hashed_key, k.revoked, k.expiry_date, u.id, u.is_active FROM apikeys_apikey k "
            "JOIN auth_user u ON u.id = k.user_id WHERE k.prefix = %s",
            (key[:PREFIX_LENGTH],),
        )
        rows = cursor.fetchall()
    now = datetime.now(UTC).replace(tzinfo=None)
    for stored, revoked, expiry, user_id, active in rows:
        if hmac.compare_digest(stored, hashed):
            if revoked or (expiry is not None and expiry < now) or not active:
                raise Invalid(401, "authentication_failed", "This API key cannot be used.")
            return int(user_id)
    raise Invalid(401, "authentication_failed", "Invalid API key.")


def _validate(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise Invalid(400, "parse_error", "The body is not JSON.") from None
    if not isinstance(body, dict) or not REQUIRED <= body.keys() <= FIELDS:
        raise Invalid(400, "invalid_request", f"Expected an object with {sorted(FIELDS)}.")
    amount, currency, source = body["amount"], body["currency"], body["source"]
    description, metadata = body.get("description", ""), body.get("metadata", {})
    if type(amount) is not int or not 1 <= amount <= MAX_AMOUNT:
        raise Invalid(400, "invalid_request", "amount: an integer from 1.")
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency) or currency not in MINOR_UNIT_DIGITS:
        raise Invalid(400, "invalid_request", "currency: a supported ISO 4217 code.")
    if not isinstance(source, str) or not SOURCE.fullmatch(source):
        raise Invalid(400, "invalid_request", "source: a card token.")
    if not isinstance(description, str) or len(description) > 500:
        raise Invalid(400, "invalid_request", "description: at most 500 characters.")
    if not isinstance(metadata, dict) or len(metadata) > 20:
        raise Invalid(400, "invalid_request", "metadata: an object of at most 20 keys.")
    return {
        "amount": amount,
        "currency": currency,
        "source": source,
        "description": description,
        "metadata": metadata,
    }


def _fingerprint(charge: dict[str, Any]) -> str:
    canonical = [charge[name] for name in ("amount", "currency", "source", "description", "metadata")]
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _masked(source: str) -> str:
    prefix, _, rest = source.partition("_")
    return f"{prefix}_…{rest[-4:]}"


INSERT_PENDING = (
    "INSERT INTO payments_transaction (id, client_id, amount, currency, source, source_masked, "
    "description, metadata, status, error_type, error_code, error_message, idempotency_key, "
    "request_fingerprint, provider_idempotency_key, provider_charge_id, attempts, status_note, "
    "review_reason, last_request_id, claim_token, created_at, updated_at) VALUES "
    "(%s, %s, %s, %s, %s, %s, %s, %s, 'pending', '', '', '', %s, %s, %s, '', 0, '', '', '', %s, "
    "UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))"
)
INSERT_ATTEMPT = (
    "INSERT INTO payments_paymentattempt (transaction_id, number, kind, started_at, duration_ms, "
    "http_status, outcome, reached_provider, message) VALUES (%s, 1, 'charge', %s, %s, %s, %s, %s, '')"
)
SETTLE = (
    "UPDATE payments_transaction SET status = %s, error_type = %s, error_code = %s, "
    "provider_charge_id = %s, attempts = 1, claim_token = '', updated_at = UTC_TIMESTAMP(6) "
    "WHERE id = %s AND claim_token = %s"
)
SELECT_EXISTING = (
    "SELECT id, amount, currency, source_masked, description, status, request_fingerprint "
    "FROM payments_transaction WHERE client_id = %s AND idempotency_key = %s"
)


class Floor:
    def __init__(self) -> None:
        self.pool = Pool(CONNECTIONS_PER_PROCESS)
        self.provider = Provider()

    def charge(self, environ: Environ) -> tuple[int, dict[str, Any]]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        idempotency_key = environ.get("HTTP_IDEMPOTENCY_KEY") or None
        if idempotency_key is not None and len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise Invalid(400, "invalid_request", "Idempotency-Key: at most 255 characters.")
        transaction_id, provider_key, claim = str(uuid.uuid4()), f"ps_{uuid.uuid4().hex}", uuid.uuid4().hex
        with self.pool.connection() as conn:
            client_id = _authenticate(conn, environ.get("HTTP_AUTHORIZATION", ""))
            charge = _validate(raw)
            fingerprint = _fingerprint(charge)
            try:
                with conn.cursor() as cursor:
                    cursor.execute(
                        INSERT_PENDING,
                        (
                            transaction_id,
                            client_id,
                            charge["amount"],
                            charge["currency"],
                            charge["source"],
                            _masked(charge["source"]),
                            charge["description"],
                            json.dumps(charge["metadata"]),
                            idempotency_key,
                            fingerprint,
                            provider_key,
                            claim,
                        ),
                    )
                conn.commit()
            except MySQLdb.IntegrityError:
                conn.rollback()
                return self._replay(conn, client_id, idempotency_key, fingerprint)

        started = datetime.now(UTC).replace(tzinfo=None)
        clock = time.monotonic()
        status, answer = self.provider.charge(
            provider_key,
            {
                "amount": charge["amount"],
                "currency": charge["currency"],
                "source": charge["source"],
                "reference": transaction_id,
                "description": charge["description"],
            },
        )
        duration_ms = int((time.monotonic() - clock) * 1000)
        outcome = answer.get("status") if 200 <= status < 300 else None
        if outcome == "succeeded":
            row = ("succeeded", "", "", str(answer.get("id", "")))
        elif outcome == "declined" or status == 402:
            row = ("failed", "card_error", "card_declined", str(answer.get("id", "")))
        else:
            row = ("unknown", "outcome_unknown", "provider_error", "")

        with self.pool.connection() as conn:
            with conn.cursor() as cursor:
                cursor.execute(
                    INSERT_ATTEMPT,
                    (transaction_id, started, duration_ms, status or None, row[0], int(status != 0)),
                )
                cursor.execute(SETTLE, (*row, transaction_id, claim))
            conn.commit()

        body = {
            "id": transaction_id,
            "amount": charge["amount"],
            "currency": charge["currency"],
            "source": _masked(charge["source"]),
            "description": charge["description"],
            "status": row[0],
        }
        if row[0] == "succeeded":
            return 201, body
        body["error"] = {"type": row[1], "code": row[2]}
        return (402 if row[0] == "failed" else 504), body

    def _replay(
        self, conn: Any, client_id: int, idempotency_key: str | None, fingerprint: str
    ) -> tuple[int, dict[str, Any]]:
        with conn.cursor() as cursor:
            cursor.execute(SELECT_EXISTING, (client_id, idempotency_key))
            found = cursor.fetchone()
        conn.commit()
        if found is None:
            raise Invalid(409, "request_in_progress", "Try again.")
        transaction_id, amount, currency, masked, description, status, stored_fingerprint = found
        if stored_fingerprint != fingerprint:
            raise Invalid(409, "idempotency_conflict", "The key was used for another charge.")
        if status == "pending":
            raise Invalid(409, "request_in_progress", "The first request is still in flight.")
        body = {
            "id": str(transaction_id),
            "amount": amount,
            "currency": currency,
            "source": masked,
            "description": description,
            "status": status,
        }
        return (201 if status == "succeeded" else 402), body

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path == "/health/live":
            status, body = 200, {"status": "ok"}
        elif path == "/api/v1/charges" and method == "POST":
            try:
                status, body = self.charge(environ)
            except Invalid as exc:
                status, body = exc.status, {"error": {"code": exc.code, "message": exc.message}}
        else:
            status, body = 404, {"error": {"code": "not_found", "message": "No such route."}}
        payload = json.dumps(body).encode()
        start_response(
            f"{status} {http.client.responses.get(status, '')}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]


_floor: Floor | None = None
_floor_lock = threading.Lock()


def application(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """gunicorn's entry point (`bench.floor:application`); the pool is made in the worker."""
    global _floor
    if _floor is None:
        with _floor_lock:
            if _floor is None:
                _floor = Floor()
    return _floor(environ, start_response)
