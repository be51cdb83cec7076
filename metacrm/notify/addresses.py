"""Where a webhook may go: not to this machine, its private network or the cloud metadata
service (link-local 169.254.169.254) unless the model says ``webhooks: {allow_private: true}``.

Checked twice: at model check time for a literal IP (or ``localhost``) in a ``notify.to`` URL,
and at delivery time on every address the host name resolves to, so that a public name
pointing at a private address is refused too. Pure stdlib (``ipaddress``, ``socket``).
"""

from __future__ import annotations

import ipaddress
import socket

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def address_problem(address: str) -> str | None:
    """Why a webhook may not go to this IP address (None when it may)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) aside
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for test, what in (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_private, "a private address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
    ):
        if test:
            return f"{ip} is {what}"
    return None


def literal_host_problem(host: str | None) -> str | None:
    """Why a host written in a URL is not public, without resolving it: a literal IP address
    or a name of this machine (None for any other name: delivery resolves and checks it)."""
    if not host:
        return None
    host = host.strip("[]").rstrip(".").lower()
    if host in LOCAL_NAMES or host.endswith(".localhost"):
        return f"{host} is this machine (loopback)"
    return address_problem(host)


def resolved_problem(host: str, port: int) -> str | None:
    """Resolve ``host`` and say why one of its addresses is not public (None when all are).
    A name that does not resolve is not refused here: the request fails and is retried."""
    literal = literal_host_problem(host)
    if literal:
        return literal
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    for info in infos:
        why = address_problem(str(info[4][0]))
        if why:
            return f"{host} resolves to {why}"
    return None


__all__ = ["address_problem", "literal_host_problem", "resolved_problem"]
