"""Where a server address points: its host, and whether that host is this machine (no DNS lookup)."""

from __future__ import annotations

import ipaddress
import socket


def url_host(url: str) -> str:
    """The host of a ``host:port`` (or ``[v6]:port``, or ``http://host:port/...``) server address."""
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest


def is_local_host(host: str) -> bool:
    """True for a loopback address or name, or this machine's own host name (no DNS lookup)."""
    if host.lower() in ("localhost", "ip6-localhost", "ip6-loopback") or host == socket.gethostname():
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
