"""Which addresses mlgate may call on a URL from policy (webhooks): public ones, and private ones only
where the policy names their network.

A webhook URL is written by whoever edits the policy, but the server that sends to it sits inside the
network: a target on loopback, link-local (cloud metadata at 169.254.169.254), a private range or any
other address that is not globally routable would let a notification reach services that were never
meant to be reachable from outside. Pure: no resolution, no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOCAL_NAMES = ("localhost", "localhost.", "ip6-localhost", "ip6-loopback")


def parse_network(text: str) -> Network:
    """`10.0.0.0/8`, `127.0.0.1` (one address), `fd00::/8`; ValueError naming the text otherwise."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"'{text}' is not an IP address or network (e.g. 10.0.0.0/8, 127.0.0.1)") from None


def kind(address: Address) -> str | None:
    """What makes `address` not public (`loopback`, `link-local`, ...), or None for a global address. An
    IPv4 address mapped into IPv6 (`::ffff:127.0.0.1`) is judged as the IPv4 one it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for name, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if flag:
            return name
    return None if address.is_global else "not globally routable"


def refusal(address: Address, allowed: Sequence[Network]) -> str | None:
    """Why mlgate may not call `address`, or None: a public address, or a private one in `allowed`."""
    found = kind(address)
    if found is None:
        return None
    carried = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if any(address in network or (carried is not None and carried in network) for network in allowed):
        return None
    allow = "name its network in notifications.webhook_private_networks to allow it"
    return f"{address} is not a public address ({found}); {allow}"


def literal(host: str) -> Address | None:
    """The address a URL's host spells literally (`10.0.0.1`, `[::1]`), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
