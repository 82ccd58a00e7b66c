"""Browse _tensorfleet._tcp.local. and report agents as they come and go.

mDNS removal is a hint only (after SIGKILL zeroconf keeps a record for many
minutes): liveness comes from the telemetry stream, never from here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from tensorfleet_agent.discovery.interfaces import SERVICE_TYPE, mdns_interfaces

log = logging.getLogger(__name__)

#: Longest advertised string kept (TXT values are up to 255 bytes; names are shown in tables and logs).
MAX_TEXT = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")
_NODE_ID = re.compile(r"[0-9a-f]{20}")


def clean_text(value: str, limit: int = MAX_TEXT) -> str:
    """What anyone on the LAN advertised, made safe to log and show: no control characters
    (terminal escapes, newlines that forge log lines, bidi overrides), at most `limit` characters."""
    cleaned = _CONTROL.sub("?", value.strip())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def parse_txt(properties: Mapping[bytes, bytes | None]) -> tuple[dict[str, str], str]:
    """The TXT record as clean strings, and what is wrong with it ('' when it describes an agent)."""
    txt: dict[str, str] = {}
    problems: list[str] = []
    for key, value in list(properties.items())[:32]:
        k = key.decode("utf-8", "replace")
        raw = value.decode("utf-8", "replace") if value is not None else ""
        txt[clean_text(k, 32)] = clean_text(raw, 128)
    node_id = txt.get("node_id", "")
    if not node_id:
        problems.append("no node_id")
    elif not _NODE_ID.fullmatch(node_id):
        problems.append(f"node_id {node_id!r} is not 20 hex digits")
    proto = txt.get("proto", "")
    if not proto.isdigit():
        problems.append(f"protocol version {proto!r} is not a number" if proto else "no protocol version")
    return txt, "; ".join(problems)


@dataclass(frozen=True)
class DiscoveredAgent:
    instance: str
    node_id: str
    name: str
    addresses: tuple[str, ...]
    port: int
    protocol_version: int
    txt: dict[str, str] = field(default_factory=dict)
    problem: str = ""  # why the record does not describe a usable agent ('' when it does)

    @property
    def address(self) -> str:
        return f"{self.addresses[0]}:{self.port}" if self.addresses else f"?:{self.port}"


def discovered(
    instance: str, properties: Mapping[bytes, bytes | None], addresses: tuple[str, ...], port: int
) -> DiscoveredAgent:
    """A resolved mDNS service as the controller sees it, every string sanitized."""
    txt, problem = parse_txt(properties)
    if not addresses or not port:
        problem = "; ".join(x for x in ("no IPv4 address or port", problem) if x)
    proto = int(txt["proto"]) if txt.get("proto", "").isdigit() else 0
    return DiscoveredAgent(
        clean_text(instance, 128),
        txt.get("node_id", ""),
        txt.get("name", ""),
        addresses,
        port,
        proto,
        txt,
        problem,
    )


Listener = Callable[[str, DiscoveredAgent | None], None]  # (instance, agent or None when removed)


class AgentBrowser:
    def __init__(self, interfaces: list[str], on_change: Listener) -> None:
        self._interfaces = interfaces
        self._on_change = on_change
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._zc = AsyncZeroconf(interfaces=mdns_interfaces(self._interfaces), ip_version=IPVersion.V4Only)
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, [SERVICE_TYPE], handlers=[self._changed])

    async def stop(self) -> None:
        for task in list(self._pending):
            task.cancel()
        if self._browser is not None:
            await self._browser.async_cancel()
        if self._zc is not None:
            await self._zc.async_close()
        self._browser = self._zc = None

    def _changed(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            self._on_change(name, None)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(name))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _resolve(self, name: str) -> None:
        if self._zc is None:
            return
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._zc.zeroconf, 3000):
            log.debug("mDNS: could not resolve %s", clean_text(name, 128))
            return
        addresses = tuple(socket.inet_ntoa(a) for a in info.addresses if len(a) == 4)
        self._on_change(name, discovered(name, info.properties or {}, addresses, int(info.port or 0)))
