"""Issue 23 on the simulated LAN: an agent that suspends its machine when idle, and Wake-on-LAN bringing it back.

The "sleeping host" namespace runs an agent with a short `--suspend-when-idle` whose `--suspend-command` freezes the
agent process (SIGSTOP: nothing answers, as on a suspended machine), and a listener (tests/helpers/wol_listener.py)
standing in for its NIC: a valid magic packet for its MAC resumes the agent (SIGCONT). Real processes, real
broadcasts on the namespaces' bridge, real gRPC: the controller shows the agent SLEEPING (not LOST), a packet for
another MAC leaves it asleep, `wake_agent` (the CLI's `agents wake`) wakes it (the controller sends the packet), and
queued work for it wakes it on its own and runs on it (queue -> magic packet -> agent online -> task runs), after a
controller restart while it slept (the controller keeps its sleeping agents in a file) that left the controller
off the subnet: an ordinary agent there relays the packet (SendWakePacket).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers.lan import SUBNET, Lan, python
from helpers.lan_sleepy import SleepyHost, start_sleepy_host, until

pytestmark = pytest.mark.slow

LAN_HOSTS = ["ctl", "desk", "peer"]
WAKE_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def sleepy(lan: Lan, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SleepyHost]:
    host = start_sleepy_host(lan, tmp_path_factory.mktemp("lan-wake"), "desk", "2s", WAKE_TIMEOUT, relay="peer")
    try:
        yield host
    finally:
        host.stop()


def sleeping(host: SleepyHost) -> dict[str, Any]:
    record = host.sleeping()
    assert record["error"] == ""  # asleep is not a fault
    return record


def test_a_wrong_mac_leaves_it_asleep_and_agents_wake_wakes_it(sleepy: SleepyHost) -> None:
    record = sleeping(sleepy)
    eth0 = next(i for i in record["interfaces"] if i["name"] == "eth0")
    assert eth0["mac"] == sleepy.mac and eth0["wake_on_lan"] and eth0["wake_on_lan_source"] == "flag"

    ctl = sleepy.cluster.controller_host
    wrong = "02:00:00:00:00:01" if sleepy.mac != "02:00:00:00:00:01" else "02:00:00:00:00:02"
    script = (
        "import sys; from tensorfleet_agent.runtime.wake_on_lan import Subnet, send_magic_packet; "
        f"send_magic_packet({wrong!r}, Subnet('eth0', {ctl.address!r}, 24))"
    )
    sent = ctl.run([python(), "-c", script], timeout=30)
    assert sent.returncode == 0, sent.stderr
    until(lambda: any(p["mac"] == wrong for p in sleepy.packets()), 5, "the listener heard the wrong MAC's packet")
    time.sleep(1.0)
    assert sleepy.frozen() and sleepy.record()["state"] == "SLEEPING"
    assert not any(p["woke"] for p in sleepy.packets())

    answer = sleepy.cluster.client.wake_agent("agent-desk")
    assert answer["state"] == "WAKING" and answer["last_wake_at"] > 0
    until(lambda: any(p["woke"] and p["mac"] == sleepy.mac for p in sleepy.packets()), 5, "a valid packet arrived")
    back = until(lambda: (r := sleepy.record())["state"] == "ONLINE" and r, 15, "the woken agent is ONLINE")
    assert back["wake_count"] == 1


def off_the_subnet(lan: Lan, name: str) -> None:
    """The host keeps its address as a /32 with a route to the LAN: it reaches every host, but has no subnet to
    broadcast on, as a controller across a router (a magic packet must be relayed by an agent on the subnet)."""
    host = lan.hosts[name]
    for argv in (
        ["ip", "addr", "del", f"{host.address}/24", "dev", "eth0"],
        ["ip", "addr", "add", f"{host.address}/32", "dev", "eth0"],
        ["ip", "route", "replace", f"{SUBNET}.0/24", "dev", "eth0", "src", host.address],
        ["ip", "route", "replace", "224.0.0.0/4", "dev", "eth0"],
    ):
        done = subprocess.run(host.command(*argv), capture_output=True, text=True)
        assert done.returncode == 0, (argv, done.stderr)


def test_queued_work_wakes_the_sleeping_agent_through_a_relay_and_runs_on_it(
    sleepy: SleepyHost, lan: Lan, fault_figures: Callable[..., None]
) -> None:
    sleeping(sleepy)  # idle again after the last wake-up: asleep again
    controller = sleepy.cluster.controller
    assert controller is not None
    controller.stop()  # a restart while it sleeps: mDNS cannot find a frozen agent, the controller's file does
    off_the_subnet(lan, "ctl")  # and it comes back off the sleeping host's subnet: agent-peer relays the packet
    controller.start()
    client = sleepy.cluster.client
    remembered = sleepy.record()
    assert remembered["state"] == "SLEEPING" and remembered["interfaces"] and remembered["wake_count"] == 1
    submitted = time.time()
    job = client.submit({"algorithm": "noop", "max_retries": 0, "constraints": {"on": ["agent-desk"]}})
    waiting = until(
        lambda: (j := client.job(job["id"]))["waiting"].startswith("waking agent agent-desk") and j,
        10,
        "the job says it waits for the agent being woken",
    )
    assert "magic packet sent" in waiting["waiting"]
    final = client.wait(job["id"], timeout=60)
    assert final["state"] == "SUCCEEDED", final
    [task] = final["task_list"]
    assert task["agent"] == "agent-desk"
    assert sleepy.record()["wake_count"] == 2
    relay = sleepy.cluster.agents["peer"].tail()
    assert f"magic packet for {sleepy.mac} sent to {SUBNET}.255:9 on eth0" in relay  # relayed: the controller could not
    fault_figures(queue_to_running_after_wake=task["started_at"] - submitted)
