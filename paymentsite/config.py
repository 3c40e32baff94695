"""Typed reading of the environment that never crashes half-way.

Every problem is collected as one message naming the variable, the value and
what is allowed. Settings keep a safe default for a bad value so that
`manage.py check` can load and report all problems at once; the system check
in `paymentsite.checks` turns them into errors that stop start-up.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

import environ

LOOPBACK_HOSTS = {"localhost"}


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
        parts = urlsplit(raw)
        host = parts.hostname or ""
        if parts.scheme == "https" and host:
            return raw
        if parts.scheme == "http" and host and is_loopback_host(host):
            return raw
        self._fail(name, raw, "expected an https:// URL (http:// is allowed only for loopback hosts)")
        return default or ""

    def database_url(self, name: str, default: str) -> dict:
        raw = self._raw(name) or default
        scheme = urlsplit(raw).scheme
        if scheme not in {"sqlite", "mysql"}:
            # Only the scheme is shown: the URL may carry a password.
            self._fail(name, f"{scheme}://…", "expected a sqlite:/// or mysql:// URL")
            raw = default
        return environ.Env.db_url_config(raw)
