"""AgentService.SendWakePacket on a real agent: a paired controller may ask it to broadcast a Wake-on-LAN magic
packet on one of its own subnets, and nothing else; every refusal names the field. (A packet actually relayed is
seen in the simulated LAN test: broadcasts stay inside namespaces there; this machine's real NIC gets none.)"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from helpers.agents import AgentProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    shared = AgentProcess(tmp_path_factory.mktemp("wake") / "agent").start()
    yield shared
    shared.stop()


@pytest.mark.parametrize(
    ("mac", "broadcast", "port", "field", "words"),
    [
        ("not-a-mac", "10.213.9.255", 0, "mac", "not a MAC address"),
        ("02:00:00:00:00:07", "203.0.113.255", 0, "broadcast", "not the broadcast address of a subnet of this"),
        ("02:00:00:00:00:07", "example.com", 0, "broadcast", "not an IPv4 broadcast address"),
        ("02:00:00:00:00:07", "203.0.113.255", 70000, "port", "must be 1..65535"),
    ],
)
async def test_a_relay_is_refused_off_its_own_subnets_and_for_bad_fields(
    agent: AgentProcess, mac: str, broadcast: str, port: int, field: str, words: str
) -> None:
    async with agent.client() as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.send_wake_packet(mac, broadcast, port)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{field}: ") and words in (caught.value.details() or "")
