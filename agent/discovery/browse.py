"""Browse _tensorfleet._tcp.local. and report agents as they come and go.

mDNS removal is a hint only (after SIGKILL zeroconf keeps a record for many
minutes): liveness comes from the telemetry stream, never from here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from tensorfleet_agent.discovery.interfaces import SERVICE_TYPE, mdns_interfaces

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiscoveredAgent:
    instance: str
    node_id: str
    name: str
    addresses: tuple[str, ...]
    port: int
    protocol_version: int
    txt: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.addresses[0]}:{self.port}"


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
            log.debug("mDNS: could not resolve %s", name)
            return
        txt = {
            (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else "")
            for k, v in (info.properties or {}).items()
        }
        addresses = tuple(socket.inet_ntoa(a) for a in info.addresses if len(a) == 4)
        if not addresses or not info.port or not txt.get("node_id"):
            log.debug("mDNS: ignoring incomplete record %s", name)
            return
        try:
            proto = int(txt.get("proto", "0"))
        except ValueError:
            proto = 0
        self._on_change(
            name,
            DiscoveredAgent(name, txt["node_id"], txt.get("name", ""), addresses, int(info.port), proto, txt),
        )
