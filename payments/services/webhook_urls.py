"""Which URLs an endpoint may have: a client's URL is a way into our network (SSRF).

In production only `https` to a name whose every address is public: loopback, private,
link-local (the cloud's metadata service), multicast, reserved and unspecified addresses, IPv4
and IPv6 (an IPv4-mapped IPv6 address counts as its IPv4 one), are refused. The check runs at
registration and again at every delivery, which then connects to the very address it checked
(payments.services.delivery), so a name that resolves elsewhere later is caught.
EVENTS_ALLOW_PRIVATE_URLS=true allows plain http and any address (development, tests).

The name lookup is bounded too, by EVENTS_TIMEOUT_MS: getaddrinfo takes no timeout (the
resolver's own, from resolv.conf, can add up to tens of seconds), so it runs on a thread of
its own and is given up waiting for at the bound ("did not resolve within"): a registration
answers, and a delivery fails and is retried, while the lookup may finish on its thread (a
daemon: a process that stops does not wait for it). At most LOOKUP_THREADS lookups of a process
run at once, so hanging ones never pile up threads; one that finds them all taken waits for a
slot within the same bound. concurrent.futures' pool would do the rest, but its threads are
joined at exit, so a worker's graceful stop would wait on a hanging resolver.

Hand-written: the standard library's `ipaddress` knows the ranges; what is left is a dozen
lines of policy no library states as we need it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

URL_MAX_CHARS = 2000
LOOKUP_THREADS = 4


class URLRefused(Exception):
    """This URL may not be an endpoint's (the message says why, for the client)."""


@dataclass(frozen=True)
class Target:
    """Where a delivery goes: the URL's parts and the checked address to connect to."""

    scheme: str
    host: str
    port: int
    path: str  # with the query
    address: str


def lookup_s() -> float:
    """How long a URL's name lookup may take."""
    return settings.EVENTS_TIMEOUT_MS / 1000


_slots = threading.BoundedSemaphore(LOOKUP_THREADS)


def _new_slots() -> None:
    global _slots
    _slots = threading.BoundedSemaphore(LOOKUP_THREADS)  # a parent's lookups are not the child's


os.register_at_fork(after_in_child=_new_slots)


def addresses_of(host: str, port: int) -> list[str]:
    """`host`'s addresses, within lookup_s(); URLRefused when it does not resolve in time."""
    bound = lookup_s()
    until = time.monotonic() + bound
    late = URLRefused(f"The host {host!r} did not resolve within {bound:g} s.")
    slots = _slots
    if not slots.acquire(timeout=bound):  # LOOKUP_THREADS lookups of this process hang
        raise late
    found: dict[str, Any] = {}
    done = threading.Event()

    def look_up() -> None:
        try:
            found["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            found["error"] = exc
        finally:
            slots.release()
            done.set()

    threading.Thread(target=look_up, name="url-lookup", daemon=True).start()
    if not done.wait(max(0.0, until - time.monotonic())):
        raise late
    if "error" in found:
        raise URLRefused(f"The host {host!r} does not resolve.")
    return list(dict.fromkeys(str(info[4][0]) for info in found["infos"]))


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id (fe80::1%eth0) says nothing
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    refused = (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )
    return ip.is_global and not refused


def check_url(url: str, *, resolve: bool = True) -> Target | None:
    """The delivery target of `url`, or URLRefused. `resolve=False`: the URL's form only (None)."""
    allow_private = settings.EVENTS_ALLOW_PRIVATE_URLS
    if len(url) > URL_MAX_CHARS:
        raise URLRefused(f"A URL is at most {URL_MAX_CHARS} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise URLRefused(f"Not a URL: {exc}.") from None
    allowed = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed:
        raise URLRefused("Must be an https:// URL." if not allow_private else "Must be an http(s):// URL.")
    if not parts.hostname:
        raise URLRefused("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise URLRefused("The URL may not carry a user name or password.")
    if parts.fragment:
        raise URLRefused("The URL may not have a #fragment.")
    if not resolve:
        return None
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = addresses_of(parts.hostname, port)
    if not allow_private:
        private = [address for address in addresses if not is_public(address)]
        if private:
            raise URLRefused(
                f"The host {parts.hostname!r} resolves to an address that is not public ({private[0]})."
            )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port, path, addresses[0])
