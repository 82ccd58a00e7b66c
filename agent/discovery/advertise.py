"""Advertise an agent as _tensorfleet._tcp.local. through zeroconf's async API."""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from tensorfleet_agent.discovery.browse import clean_text
from tensorfleet_agent.discovery.interfaces import SERVICE_TYPE, mdns_interfaces

log = logging.getLogger(__name__)
_warned: set[str] = set()


@dataclass(frozen=True)
class AdvertisedAgent:
    node_id: str
    name: str
    port: int
    addresses: tuple[str, ...]
    protocol_version: int
    gpus: int
    slots: int
    cluster_id: str = ""
    cert_fingerprint: str = ""
    agent_version: str = ""
    power: str = "awake"  # "sleeping" while it announces a suspend (--suspend-when-idle) and while suspended
    desk: str = ""  # desk mode: "lending", "owner_active" or "paused"; "" when not in desk mode

    def __post_init__(self) -> None:
        # Controllers log and show the name: never put control characters (escapes, newlines) on the LAN.
        name = clean_text(self.name)
        if name != self.name:
            if self.name not in _warned:  # the advertisement is rebuilt on every update: say it once
                _warned.add(self.name)
                log.warning("advertising the agent name %r as %r (control characters or too long)", self.name, name)
            object.__setattr__(self, "name", name)

    def txt(self) -> dict[str, str]:
        return {
            "node_id": self.node_id,
            "name": self.name,
            "proto": str(self.protocol_version),
            "gpus": str(self.gpus),
            "slots": str(self.slots),
            "cluster": self.cluster_id,
            "fp": self.cert_fingerprint,
            "version": self.agent_version,
            "power": self.power,
            **({"desk": self.desk} if self.desk else {}),
        }

    def instance_name(self) -> str:
        # Unique per node (derived from the key), so name probing can be skipped safely.
        label = re.sub(r"[^A-Za-z0-9-]", "-", self.name)[:40].strip("-") or "agent"
        return f"{label}-{self.node_id[:12]}.{SERVICE_TYPE}"


def _info(agent: AdvertisedAgent) -> AsyncServiceInfo:
    return AsyncServiceInfo(
        SERVICE_TYPE,
        agent.instance_name(),
        addresses=[socket.inet_aton(a) for a in agent.addresses],
        port=agent.port,
        properties=agent.txt(),
        server=f"tf-{agent.node_id[:12]}.local.",
    )


class Advertiser:
    def __init__(self, interfaces: list[str]) -> None:
        self._interfaces = interfaces
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None

    async def start(self, agent: AdvertisedAgent) -> None:
        self._zc = AsyncZeroconf(interfaces=mdns_interfaces(self._interfaces), ip_version=IPVersion.V4Only)
        self._info = _info(agent)
        # The first await schedules the announcement, the second waits until it was sent.
        await (await self._zc.async_register_service(self._info, cooperating_responders=True))
        log.info("advertised %s on %s port %d", agent.instance_name(), ",".join(agent.addresses), agent.port)

    async def update(self, agent: AdvertisedAgent) -> None:
        """Announce changed TXT values (power, desk) under the same name."""
        if self._zc is None or self._info is None:
            return
        if _info(agent).properties == self._info.properties:
            return
        self._info = _info(agent)
        await (await self._zc.async_update_service(self._info))
        log.debug("mDNS record updated: power=%s desk=%s", agent.power, agent.desk or "-")

    async def stop(self) -> None:
        """Send the mDNS goodbye and close the sockets."""
        if self._zc is None:
            return
        if self._info is not None:
            await (await self._zc.async_unregister_service(self._info))
        await self._zc.async_close()
        self._zc = None
