"""Webhook targets: where a client's events go, and the check of a webhook URL.

Its own module, below both app/config.py (which checks SMSBRIDGE_WEBHOOK_URL as the settings are read)
and app/webhooks/delivery.py (which checks each target again at delivery), so neither imports the other. It
imports nothing of the bridge's, and urllib3 only inside parse_target: gunicorn's master reads the
settings before gevent patches ssl in the workers.

A URL is parsed once, with urllib3's parser (the HTTP client's own), and refused unless no other reader
could take it for another place: http or https only; printable ASCII only (no spaces, control characters
or backslashes; an international name in its xn-- form); no user:password@; no fragment; a host that is
a DNS name or an IP address written plainly (127.1, 2130706433, 0x7f.0.0.1 and other odd IPv4 forms are
refused, as are IPv6 zones).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """Where a client's events go."""

    url: str
    format: str = "v2"
    secret: str = field(default="", repr=False)


class UnsafeTarget(ValueError):
    """A target the deliverer will not connect to."""


@dataclass(frozen=True)
class Endpoint:
    """A webhook URL as the HTTP client reads it, parsed once (urllib3's parser) and checked."""

    #: the URL requested: urllib3's own rendering of what it parsed
    url: str
    scheme: str
    #: a lower-case DNS name, or an IP address (without brackets)
    host: str
    port: int
    #: the host when it is an IP address
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None

    @property
    def origin(self) -> tuple[str, str, int]:
        """Scheme, host and port: what the per-target cap counts by."""
        return self.scheme, self.host, self.port


_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_HEX_DIGITS = frozenset("0123456789abcdef")


def parse_target(url: str) -> Endpoint:
    """Parse a webhook URL; raise UnsafeTarget for anything an HTTP client could read as another place."""
    if not isinstance(url, str) or not url:
        raise UnsafeTarget("the webhook URL is empty")
    if any(not "!" <= c <= "~" for c in url):
        raise UnsafeTarget(
            "the webhook URL must be printable ASCII without spaces or control characters "
            "(write an international host name in its xn-- form, other characters %-encoded)"
        )
    if "\\" in url:
        raise UnsafeTarget("the webhook URL holds a backslash, which URL parsers read differently")
    # Imported here: gunicorn's master reads the settings (which check targets) before gevent patches
    # ssl in the workers, and urllib3 imported by then would keep the unpatched ssl (a blocking TLS).
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    try:
        parts = parse_url(url)
    except LocationParseError:
        raise UnsafeTarget("the webhook URL cannot be parsed") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeTarget("the webhook URL must be http:// or https://")
    if parts.auth is not None:
        raise UnsafeTarget("the webhook URL must not hold user:password@ (send the secret another way)")
    if parts.fragment is not None:
        raise UnsafeTarget("the webhook URL must not hold a #fragment")
    host = parts.host or ""
    if not host:
        raise UnsafeTarget("the webhook URL has no host")
    if not url.partition("://")[2].lower().startswith(host):
        # The parser decoded or rewrote it (ex%61mple.com): another reader would see another name.
        raise UnsafeTarget("the webhook URL's host must be written plainly (no %-escapes)")
    if parts.port == 0:
        raise UnsafeTarget("the webhook URL's port must be 1 to 65535")
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            address = None
        if address is None or address.scope_id:  # a zone (%eth0) names an interface, not a host
            raise UnsafeTarget("the webhook URL's IPv6 address must be a plain IPv6 address, without a zone")
        host = str(address)
    else:
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            _check_name(host)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Endpoint(parts.url, parts.scheme, host, port, address)


def _check_name(host: str) -> None:
    labels = host.split(".")
    if any(
        not 1 <= len(label) <= 63
        or not set(label) <= _NAME_CHARACTERS
        or label.startswith("-")
        or label.endswith("-")
        for label in labels
    ):
        raise UnsafeTarget(
            "the webhook URL's host must be a DNS name (letters, digits, hyphens; no trailing dot) "
            "or an IP address"
        )
    last = labels[-1]
    if last.isdigit() or (last.startswith("0x") and set(last[2:]) <= _HEX_DIGITS):
        # 127.1, 2130706433, 0x7f.1: resolvers read these as IPv4 addresses, each its own way.
        raise UnsafeTarget("the webhook URL's IPv4 address must be four decimal numbers (a.b.c.d)")


def check_target(url: str, fmt: str, where: str) -> None:
    """Raise ValueError unless `url` and `fmt` make a valid target."""
    try:
        parse_target(url)
    except UnsafeTarget as exc:
        raise ValueError(f"{where}: {exc}") from None
    if fmt not in ("v1", "v2"):
        raise ValueError(f"{where}: the webhook format must be v1 or v2")
