"""Typed reading of the environment that never crashes half-way.

Every problem is collected as one message naming the variable, the value and
what is allowed. Settings keep a safe default for a bad value so that
`manage.py check` can load and report all problems at once; the system check
in `core.checks` turns them into errors that stop start-up.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import environ
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

LOOPBACK_HOSTS = {"localhost"}
# The key a development checkout runs with; production mode refuses it.
DEVELOPMENT_SECRET_KEY = "insecure-development-key-change-me"
PRODUCTION = "production mode (DJANGO_DEBUG=false)"
# What mysqlclient's ssl_mode accepts.
SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
# The modes under which a connection must be encrypted (checked on every new connection).
ENCRYPTED_SSL_MODES = {"REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY"}
# The database given as parts, the alternative to DATABASE_URL.
DB_PART_VARIABLES = ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")
# DATABASE_URL query options for MySQL: passed to mysqlclient as they are, except ssl_* files,
# which become its `ssl` dict.
MYSQL_URL_OPTIONS = {
    "charset",
    "collation",
    "connect_timeout",
    "read_timeout",
    "write_timeout",
    "init_command",
    "sql_mode",
    "isolation_level",
    "compress",
    "ssl_mode",
}
MYSQL_URL_SSL_OPTIONS = {"ssl_ca": "ca", "ssl_cert": "cert", "ssl_key": "key", "ssl_capath": "capath"}
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")
# A Standard Webhooks secret: `whsec_` and the key in base64; the scheme asks for 24 to 64 bytes.
WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_SECRET_BYTES = (24, 64)


def is_loopback_host(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EnvReader:
    def __init__(self, env: environ.Env) -> None:
        self.env = env
        self.errors: list[str] = []

    def _raw(self, name: str, aliases: Iterable[str] = ()) -> str | None:
        for candidate in (name, *aliases):
            value = self.env.str(candidate, default=None)
            if value is not None and value.strip() != "":
                return value.strip()
        return None

    def _fail(self, name: str, value: str, allowed: str) -> None:
        self.errors.append(f"{name}={value!r} is invalid: {allowed}.")

    def str(self, name: str, default: str | None = None, *, aliases: Iterable[str] = ()) -> str | None:
        value = self._raw(name, aliases)
        return default if value is None else value

    def required_str(self, name: str) -> str:
        value = self._raw(name)
        if value is None:
            self.errors.append(f"{name} is required and is not set.")
            return ""
        return value

    def int(self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        allowed = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        try:
            value = int(raw)
        except ValueError:
            self._fail(name, raw, f"expected {allowed}")
            return default
        if value < minimum or (maximum is not None and value > maximum):
            self._fail(name, raw, f"expected {allowed}")
            return default
        return value

    def bool(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        self._fail(name, raw, "expected true or false")
        return default

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        allowed = sorted(choices)
        if raw.upper() in allowed:
            return raw.upper()
        if raw.lower() in allowed:
            return raw.lower()
        self._fail(name, raw, f"expected one of {', '.join(allowed)}")
        return default

    def provider_url(self, name: str, *, required: bool, default: str | None = None) -> str:
        raw = self._raw(name)
        if raw is None:
            if required:
                self.errors.append(f"{name} is required and is not set.")
            return default or ""
        problem = provider_url_problem(raw)
        if problem is None:
            return raw
        self._fail(name, _mask_userinfo(raw), problem)
        return default or ""

    def list(self, name: str, default: list[str]) -> list[str]:
        raw = self._raw(name)
        if raw is None:
            return default
        return [item.strip() for item in raw.split(",") if item.strip()]

    def origins(self, name: str) -> list[str]:
        """Origins such as https://payments.example.com (Django's CSRF_TRUSTED_ORIGINS)."""
        origins = self.list(name, [])
        for origin in origins:
            parts = urlsplit(origin)
            if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path not in {"", "/"}:
                self._fail(
                    name, origin, "expected comma-separated origins such as https://payments.example.com"
                )
                return []
        return origins

    def proxy_ssl_header(self, name: str) -> tuple[str, str] | None:
        """The header a TLS-terminating proxy sets to `https` (Django's SECURE_PROXY_SSL_HEADER)."""
        raw = self._raw(name)
        if raw is None:
            return None
        if not HEADER_NAME.match(raw):
            self._fail(name, raw, "expected a header name such as X-Forwarded-Proto")
            return None
        return "HTTP_" + raw.upper().replace("-", "_"), "https"

    def webhook_secrets(self, name: str) -> tuple[str, ...]:
        """Standard Webhooks secrets (`whsec_` + base64 of 24 to 64 bytes), separated by spaces:
        several at once while one is rotated. Unset: none (the endpoint is off). Masked in errors."""
        raw = self._raw(name)
        if raw is None:
            return ()
        secrets = tuple(raw.split())
        for position, secret in enumerate(secrets, start=1):
            problem = webhook_secret_problem(secret)
            if problem:
                self._fail(name, f"<secret {position} of {len(secrets)}, masked>", problem)
                return ()
        return secrets

    def secret_key(self, name: str, *, debug: bool) -> str:
        """A missing, development or guessable key is refused in production mode (masked in the message)."""
        raw = self._raw(name)
        if debug:
            return raw or DEVELOPMENT_SECRET_KEY
        if raw is None:
            self.errors.append(
                f"{name} is not set: {PRODUCTION} needs a secret key of at least 50 random characters; "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(50))'."
            )
            return DEVELOPMENT_SECRET_KEY
        weak = (
            raw == DEVELOPMENT_SECRET_KEY
            or raw.startswith("django-insecure-")
            or len(raw) < 50
            or len(set(raw)) < 5
        )
        if weak:
            self._fail(
                name,
                f"<{len(raw)} characters, masked>",
                f"{PRODUCTION} needs at least 50 random characters, not a development key; generate one "
                "with: python -c 'import secrets; print(secrets.token_urlsafe(50))'",
            )
        return raw

    def database(self, default_sqlite_url: str, *, debug: bool) -> dict:
        """DATABASE_URL, or DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASSWORD, never both.

        Neither: SQLite, which production mode runs only with DB_ALLOW_SQLITE=true.
        """
        url = self._raw("DATABASE_URL")
        parts = [name for name in DB_PART_VARIABLES if self._raw(name) is not None]
        if url is not None and parts:
            self.errors.append(
                f"DATABASE_URL and {', '.join(parts)} are both set: give the database one way, either "
                "DATABASE_URL=mysql://… or the DB_* variables, and unset the other."
            )
        if parts and url is None:
            return self._database_from_parts()
        database = (
            self._database_from_url(url) if url is not None else environ.Env.db_url_config(default_sqlite_url)
        )
        if database is None:  # refused: the error names it; the default keeps the rest loadable
            return environ.Env.db_url_config(default_sqlite_url)
        if database["ENGINE"] != "django.db.backends.sqlite3":
            return database
        if not debug and not self.bool("DB_ALLOW_SQLITE", False):
            given = (
                f"DATABASE_URL={url!r} is" if url is not None else "DATABASE_URL is not set, and SQLite is"
            )
            self.errors.append(
                f"{given} refused in {PRODUCTION}: set DATABASE_URL=mysql://… (or DB_HOST, DB_NAME, "
                "DB_USER, DB_PASSWORD), or DB_ALLOW_SQLITE=true to run on SQLite on purpose."
            )
        return database

    def _database_from_url(self, raw: str) -> dict | None:
        """The parsed URL, or None (and an error) when it is unusable."""
        parts = urlsplit(raw)
        if parts.scheme not in {"sqlite", "mysql"}:
            # Only the scheme is shown: the URL may carry a password.
            self._fail("DATABASE_URL", f"{parts.scheme}://…", "expected a sqlite:/// or mysql:// URL")
            return None
        try:
            parts.port  # noqa: B018  (raises on a port that is not a number in range)
        except ValueError:
            self._fail("DATABASE_URL", mask_url(raw), "expected a port from 1 to 65535")
            return None
        database = environ.Env.db_url_config(raw)
        if parts.scheme == "mysql" and not (database["HOST"] and database["NAME"]):
            self._fail("DATABASE_URL", mask_url(raw), "expected mysql://user:password@host:3306/name")
            return None
        return database

    def _database_from_parts(self) -> dict:
        host = self._raw("DB_HOST")
        name = self._raw("DB_NAME")
        user = self._raw("DB_USER")
        missing = [
            var for var, value in (("DB_HOST", host), ("DB_NAME", name), ("DB_USER", user)) if not value
        ]
        if missing:
            self.errors.append(
                f"{', '.join(missing)} not set: with DB_* variables (instead of DATABASE_URL) "
                "DB_HOST, DB_NAME and DB_USER are required (DB_PORT defaults to 3306, DB_PASSWORD to none)."
            )
        return {
            "ENGINE": "django.db.backends.mysql",
            "HOST": host or "",
            "PORT": self.int("DB_PORT", 3306, minimum=1, maximum=65535),
            "NAME": name or "",
            "USER": user or "",
            "PASSWORD": self._raw("DB_PASSWORD") or "",
        }

    def mysql_options(self, url_options: dict) -> dict:
        """mysqlclient's connect options: the URL's query merged with DB_SSL_* (which win).

        DB_SSL_MODE defaults to VERIFY_IDENTITY when a CA is given: the server's
        certificate must chain to it and name the host connected to.
        """
        options: dict = {"charset": "utf8mb4"}
        ssl: dict[str, str] = {}
        for key, value in url_options.items():
            if key in MYSQL_URL_SSL_OPTIONS:
                ssl[MYSQL_URL_SSL_OPTIONS[key]] = self._pem_file(f"DATABASE_URL option {key}", str(value))
            elif key in MYSQL_URL_OPTIONS:
                options[key] = value
            else:
                allowed = ", ".join(sorted(MYSQL_URL_OPTIONS | MYSQL_URL_SSL_OPTIONS.keys()))
                self._fail("DATABASE_URL option", key, f"expected one of {allowed}")
        for variable, key in (("DB_SSL_CA", "ca"), ("DB_SSL_CERT", "cert"), ("DB_SSL_KEY", "key")):
            path = self._raw(variable)
            if path is not None:
                ssl[key] = self._pem_file(variable, path)
        url_mode = str(options.pop("ssl_mode", "")).upper()
        if url_mode and url_mode not in SSL_MODES:
            self._fail("DATABASE_URL option ssl_mode", url_mode, f"expected one of {', '.join(SSL_MODES)}")
            url_mode = ""
        mode = self.choice("DB_SSL_MODE", url_mode or ("VERIFY_IDENTITY" if "ca" in ssl else ""), SSL_MODES)
        if mode == "DISABLED" and ssl:
            # The client library would still use TLS with a CA given.
            self._fail(
                "DB_SSL_MODE", mode, "DISABLED contradicts the CA, certificate or key given; unset one"
            )
        if mode:
            options["ssl_mode"] = mode
        if ssl:
            options["ssl"] = ssl
        return options

    def pem_file(self, name: str) -> str | None:
        """The path `name` gives, of a file that exists; None when it is unset."""
        path = self._raw(name)
        return None if path is None else self._pem_file(name, path)

    def _pem_file(self, name: str, path: str) -> str:
        if not Path(path).is_file():
            self._fail(name, path, "expected the path of a readable PEM file (no such file)")
        return path


def webhook_secret_problem(secret: str) -> str | None:
    """Why `secret` is no Standard Webhooks secret, or None. Strict base64: the library's own
    decoder skips characters it does not know, so a typo would silently make another key."""
    low, high = WEBHOOK_SECRET_BYTES
    expected = (
        f"expected {WEBHOOK_SECRET_PREFIX}<base64 of {low} to {high} random bytes>, "
        "several separated by spaces"
    )
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        return expected
    encoded = secret[len(WEBHOOK_SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return expected
    if not low <= len(key) <= high:
        return f"{expected} (this one is {len(key)} bytes)"
    return None


def provider_url_problem(raw: str) -> str | None:
    """Why a provider URL is refused, or None. Read the way the HTTP client reads it.

    requests sends to the host urllib3's `parse_url` finds, so the https/loopback check must look
    at that host, and a URL that another parser reads differently is refused: in
    `http://provider.example.net\\@127.0.0.1/v1/charges` urlsplit sees 127.0.0.1 while urllib3
    sends to provider.example.net, over plain HTTP.
    """
    if "\\" in raw or any(ord(char) <= 0x20 or ord(char) == 0x7F for char in raw):
        return "expected a URL without backslashes, spaces or control characters"
    try:
        sent_to = parse_url(raw)
        checked = urlsplit(raw)
        checked_port = checked.port
    except (LocationParseError, ValueError):
        return "expected a URL such as https://api.provider.example/v1/charges"
    if sent_to.auth or "@" in checked.netloc:
        return "expected no user or password in the URL (the key belongs in PAYMENT_API_KEY)"
    if sent_to.query or sent_to.fragment or checked.query or checked.fragment or "?" in raw or "#" in raw:
        return "expected no query or fragment (lookups append /{key} to the path)"
    host = (sent_to.host or "").strip("[]").lower()
    try:  # urllib3 sends an international name in its IDNA form
        checked_host = (checked.hostname or "").encode("idna").decode("ascii")
    except UnicodeError:
        checked_host = ""
    if (sent_to.scheme, host, sent_to.port) != (checked.scheme.lower(), checked_host, checked_port):
        return "expected a URL that the HTTP client and this check read alike (they see different hosts)"
    if sent_to.scheme == "https" and host:
        return None
    if sent_to.scheme == "http" and host and is_loopback_host(host):
        return None
    return "expected an https:// URL (http:// is allowed only for loopback hosts)"


def _mask_userinfo(url: str) -> str:
    """The URL with anything before an @ in its authority masked: it may be a password."""
    scheme, separator, rest = url.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if not separator or "@" not in authority:
        return url
    return f"{scheme}://<masked>@{rest[len(authority.rsplit('@', 1)[0]) + 1 :]}"


def mask_url(url: str) -> str:
    """The URL with its password replaced, fit for a message or a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
