"""Which URLs an endpoint may have: a client's URL is a way into our network (SSRF).

In production only `https` to a name whose every address is public: loopback, private,
link-local (the cloud's metadata service), multicast, reserved and unspecified addresses, IPv4
and IPv6 (an IPv4-mapped IPv6 address counts as its IPv4 one), are refused. The check runs at
registration and again at every delivery, which then connects to the very address it checked
(payments.services.delivery), so a name that resolves elsewhere later is caught.
EVENTS_ALLOW_PRIVATE_URLS=true allows plain http and any address (development, tests).

Hand-written: the standard library's `ipaddress` knows the ranges; what is left is a dozen
lines of policy no library states as we need it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

URL_MAX_CHARS = 2000


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
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise URLRefused(f"The host {parts.hostname!r} does not resolve.") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        private = [address for address in addresses if not is_public(address)]
        if private:
            raise URLRefused(
                f"The host {parts.hostname!r} resolves to an address that is not public ({private[0]})."
            )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port, path, addresses[0])
