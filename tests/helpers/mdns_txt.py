"""An agent's mDNS TXT record as a fresh resolver (no cache) gets it from the agent now, on loopback."""

from __future__ import annotations

import asyncio

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from helpers.agents import AgentProcess
from tensorfleet_agent.discovery.advertise import AdvertisedAgent
from tensorfleet_agent.discovery.interfaces import SERVICE_TYPE


async def mdns_txt(agent: AgentProcess) -> dict[str, str]:
    node_id = str(agent.info["node_id"])
    instance = AdvertisedAgent(node_id, agent.name, agent.port, ("127.0.0.1",), 1, 0, 1).instance_name()
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        info = AsyncServiceInfo(SERVICE_TYPE, instance)
        assert await info.async_request(zc.zeroconf, 3000), f"{instance} did not resolve"
        return {k.decode(): (v or b"").decode() for k, v in (info.properties or {}).items()}
    finally:
        await zc.async_close()


async def mdns_says(agent: AgentProcess, key: str, want: str, tries: int = 10) -> None:
    """The record has key=want within `tries` looks 0.3 s apart (an agent updates it at most once a second)."""
    got = None
    for _ in range(tries):
        got = (await mdns_txt(agent)).get(key)
        if got == want:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"mDNS says {key}={got}, not {want}")
