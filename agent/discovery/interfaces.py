"""Which interfaces mDNS may use (docs/architecture.md, 'Processes and who dials whom').

`--interfaces` / TENSORFLEET_MDNS_INTERFACES takes a comma list of IPv4
addresses or interface names ("127.0.0.1", "eth0"); empty means all interfaces.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zeroconf import InterfaceChoice

SERVICE_TYPE = "_tensorfleet._tcp.local."
ENV_VAR = "TENSORFLEET_MDNS_INTERFACES"


def parse_interfaces(spec: str | None) -> list[str]:
    """Resolve the comma list to IPv4 addresses; raise ValueError naming what is unknown."""
    if spec is None:
        spec = os.environ.get(ENV_VAR, "")
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if not items or items == ["all"]:
        return []
    out: list[str] = []
    by_name: dict[str, list[str]] = {}
    for item in items:
        try:
            out.append(str(ipaddress.IPv4Address(item)))
            continue
        except ValueError:
            pass
        by_name = by_name or _ipv4_by_interface()  # psutil only for a name: serve parses this before its agent starts
        if item not in by_name:
            raise ValueError(
                f"mDNS interface {item!r} is neither an IPv4 address nor an interface here "
                f"(interfaces: {', '.join(sorted(by_name))})"
            )
        if not by_name[item]:
            raise ValueError(f"mDNS interface {item!r} has no IPv4 address")
        out.extend(by_name[item])
    return out


def _ipv4_by_interface() -> dict[str, list[str]]:
    import psutil

    return {
        name: [a.address for a in addrs if a.family == socket.AF_INET] for name, addrs in psutil.net_if_addrs().items()
    }


def mdns_interfaces(addresses: list[str]) -> list[str] | InterfaceChoice:
    from zeroconf import InterfaceChoice  # here: parsing --interfaces needs no zeroconf

    return list(addresses) if addresses else InterfaceChoice.All


def advertised_addresses(bind_host: str, restricted: list[str]) -> list[str]:
    """The addresses to put in the mDNS record: the bound one, else the restricted ones, else all IPv4."""
    if bind_host not in ("", "0.0.0.0", "::"):
        return [bind_host]
    if restricted:
        return list(restricted)
    import psutil

    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                out.append(a.address)
    return out or ["127.0.0.1"]
