"""mDNS (zeroconf) advertisement on agents and browsing on controllers.

The names below are loaded on first use: `discovery.interfaces` (flag parsing, on every start) must not pull in
zeroconf, which an agent that does not advertise and a controller that does not browse never need."""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "AdvertisedAgent": "advertise",
    "Advertiser": "advertise",
    "AgentBrowser": "browse",
    "DiscoveredAgent": "browse",
    "SERVICE_TYPE": "interfaces",
    "mdns_interfaces": "interfaces",
}

__all__ = [
    "SERVICE_TYPE",
    "AdvertisedAgent",
    "Advertiser",
    "AgentBrowser",
    "DiscoveredAgent",
    "mdns_interfaces",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
