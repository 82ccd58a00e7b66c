"""A "sleeping host" on the simulated LAN (issue 23), shared by tests/lan/test_lan_wake.py and
benchmarks/wake_bench.py.

Its agent runs with a short `--suspend-when-idle` and a `--suspend-command` that freezes the agent process
(SIGSTOP: nothing answers, as on a suspended machine); a listener in its namespace (wol_listener.py) stands in for
its NIC: a valid magic packet for its MAC resumes the agent (SIGCONT). The controller is on another host of the LAN.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.lan import Lan, python
from helpers.lan_cluster import LanCluster, LanProcess
from helpers.waiting import wait_until as until

LISTENER = Path(__file__).with_name("wol_listener.py")
FREEZE = "sh -c 'kill -STOP $TENSORFLEET_AGENT_PID'"  # the "suspend": the agent resumes when the listener says


@dataclass
class SleepyHost:
    cluster: LanCluster
    agent: LanProcess
    mac: str
    listener: subprocess.Popen[bytes] | None
    heard: Path  # the listener's JSON lines

    def packets(self) -> list[dict[str, Any]]:
        lines = self.heard.read_text().splitlines() if self.heard.exists() else []
        return [json.loads(line) for line in lines if '"woke"' in line]

    def frozen(self) -> bool:
        assert self.agent.proc is not None
        status = Path(f"/proc/{self.agent.proc.pid}/status").read_text()
        return any(line.split()[1] in ("T", "t") for line in status.splitlines() if line.startswith("State:"))

    def record(self) -> dict[str, Any]:
        return self.cluster.agent_record(self.agent.host.name)

    def sleeping(self, timeout: float = 25.0) -> dict[str, Any]:
        """Once the controller shows it SLEEPING and its process is frozen."""
        record = until(lambda: (r := self.record())["state"] == "SLEEPING" and r, timeout, "the agent shows SLEEPING")
        until(self.frozen, 5, "the agent process is frozen (its machine 'suspended')")
        return dict(record)

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.kill()
            self.listener.wait(10)
        if self.agent.proc is not None and self.agent.running:
            os.kill(self.agent.proc.pid, signal.SIGCONT)  # a frozen agent cannot drain on SIGTERM
        self.cluster.stop()


def start_sleepy_host(
    lan: Lan, tmp: Path, host_name: str, idle: str, wake_timeout: float, relay: str = ""
) -> SleepyHost:
    """The controller on `ctl`, the sleeping agent and its listener on `host_name` (and an ordinary agent on
    `relay`, one that can relay a magic packet); stop() ends them all."""
    cluster = LanCluster(lan, tmp)
    agent = cluster.add_agent(
        host_name, 1, None, "--suspend-when-idle", idle, "--suspend-command", FREEZE, "--wol", "eth0"
    )
    if relay:
        cluster.add_agent(relay).spawn()
    controller = cluster.add_controller("--wake-timeout", str(wake_timeout))
    host = lan.hosts[host_name]
    link = subprocess.run(host.command("ip", "-j", "link", "show", "eth0"), capture_output=True, text=True, check=True)
    mac = json.loads(link.stdout)[0]["address"]
    sleepy = SleepyHost(cluster, agent, mac, None, tmp / "listener.jsonl")
    try:
        controller.start()  # first: the agent's idle clock starts with it, and it must be seen awake once
        agent.start()
        # seen awake and paired once; with a short idle time it may be asleep again by the time we look
        name = f"agent-{host_name}"
        until(
            lambda: any(a["name"] == name and a["paired"] and a["state"] in ("ONLINE", "SLEEPING")
                        for a in cluster.client.agents()),
            30, "the agent paired with the controller",
        )  # fmt: skip
        assert agent.proc is not None  # `ip netns exec` execs the agent: this is its pid
        sleepy.listener = host.popen([python(), str(LISTENER), mac, str(agent.proc.pid)], sleepy.heard)
        until(lambda: sleepy.heard.exists() and '"listening"' in sleepy.heard.read_text(), 15, "the listener is up")
    except BaseException:
        sleepy.stop()
        raise
    return sleepy
