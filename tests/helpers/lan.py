"""A simulated LAN: network namespaces on a bridge, real processes in them (README.md, "Development").

Every address used here lives inside namespaces this module creates; nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.213.0"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def lan_unavailable_reason() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"tfprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create network namespaces here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    name: str
    netns: str
    address: str
    iface: str = "eth0"
    peer: str = ""  # its veth's other end, on the bridge

    def command(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def popen(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with log.open("ab") as fh:
            return subprocess.Popen(
                self.command(*argv), stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )

    def run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "TENSORFLEET_MDNS_INTERFACES": self.address},
        )


@dataclass
class Lan:
    """A bridge in its own namespace and one namespace per host, each with eth0 on the bridge."""

    host_names: list[str]
    prefix: str = field(default_factory=lambda: f"tf{os.getpid() % 100000}")
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}-lan"

    def build(self) -> Lan:
        self.teardown()
        _ip("netns", "add", self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for i, name in enumerate(self.host_names):
            ns = f"{self.prefix}-{name}"
            peer = f"p{i}-{self.prefix}"[:15]
            address = f"{SUBNET}.{10 + i}"
            _ip("netns", "add", ns)
            _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", peer, "netns", self.bridge_ns)
            _ip("-n", self.bridge_ns, "link", "set", peer, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
            self.hosts[name] = Host(name, ns, address, peer=peer)
        return self

    def set_link(self, name: str, up: bool) -> None:
        host = self.hosts[name]
        _ip("-n", host.netns, "link", "set", "eth0", "up" if up else "down")

    def limit_rate(self, name: str, rate: str, latency: str = "400ms", fair: bool = False) -> None:
        """A slow link, both ways: a token bucket on the host's eth0 and on its end at the bridge (no netem here).

        fair: the link's rate shared fairly per other host instead of one FIFO, as a real NIC's default fq_codel and
        a switch port do per flow (this kernel has neither, nor sfq/prio/drr; it has htb and u32): an htb class for
        each other host, by destination going out and by source coming in, each guaranteed rate/N and allowed the
        whole rate, each with a byte FIFO holding QUEUE_MS of the link. A small flow (telemetry) then waits behind
        its own class only, not behind bulk streams to other hosts. One flow alone still gets the whole rate."""
        host = self.hosts[name]
        if not fair:
            tbf = ["root", "tbf", "rate", rate, "burst", "32kbit", "latency", latency]
            subprocess.run(host.command("tc", "qdisc", "replace", "dev", "eth0", *tbf), check=True, capture_output=True)
            _ip("netns", "exec", self.bridge_ns, "tc", "qdisc", "replace", "dev", host.peer, *tbf)
            return
        others = [h.address for h in self.hosts.values() if h.name != name]
        for where, dev, match in ((host.netns, "eth0", "dst"), (self.bridge_ns, host.peer, "src")):
            tc = ["ip", "netns", "exec", where, "tc"]
            subprocess.run([*tc, "qdisc", "del", "dev", dev, "root"], capture_output=True)  # a limit set before
            for argv in _fair_tc(dev, rate, others, match):
                subprocess.run([*tc, *argv], check=True, capture_output=True, text=True)

    def drop_packets(self, name: str, probability: float) -> None:
        """A lossy link: drop this share of the host's packets, both ways, at random."""
        host = self.hosts[name]
        for chain in ("INPUT", "OUTPUT"):
            subprocess.run(
                host.command(
                    "iptables",
                    "-A",
                    chain,
                    "-i" if chain == "INPUT" else "-o",
                    "eth0",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    str(probability),
                    "-j",
                    "DROP",
                ),
                check=True,
                capture_output=True,
            )

    def clear_link_faults(self, name: str) -> None:
        host = self.hosts[name]
        subprocess.run(host.command("tc", "qdisc", "del", "dev", "eth0", "root"), capture_output=True)
        _ip("netns", "exec", self.bridge_ns, "tc", "qdisc", "del", "dev", host.peer, "root", check=False)
        if shutil.which("iptables"):
            subprocess.run(host.command("iptables", "-F"), capture_output=True)

    def teardown(self) -> None:
        listed = _ip("netns", "list", check=False).stdout.split()
        for ns in [n for n in listed if n.startswith(f"{self.prefix}-")]:
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            _ip("netns", "del", ns, check=False)


QUEUE_MS = 100  # each fair class's FIFO holds this much of the link's rate (a LAN switch port's buffer)


def _rate_bits(rate: str) -> float:
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bit": 1.0}
    for unit, scale in units.items():
        if rate.endswith(unit):
            return float(rate[: -len(unit)]) * scale
    raise ValueError(f"not a tc rate: {rate!r} (e.g. 200mbit)")


def _fair_tc(dev: str, rate: str, others: list[str], match: str) -> list[list[str]]:
    """tc commands: an htb at `rate` on dev, a class per other host's address (`match`: dst or src) and one for the
    rest (ARP, multicast), each rate/N guaranteed, borrowing up to the whole rate, round robin between them."""
    total = _rate_bits(rate)
    share = f"{max(int(total / (len(others) + 1)), 8000)}bit"
    queue = str(max(int(total / 8 * QUEUE_MS / 1000), 64 * 1024))  # bytes
    argv = [
        ["qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "2"],
        ["class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", rate, "ceil", rate],
    ]
    for i, address in enumerate([None, *others]):
        classid = "1:2" if address is None else f"1:{10 + i}"
        htb = ["htb", "rate", share, "ceil", rate, "quantum", "30000"]
        argv.append(["class", "add", "dev", dev, "parent", "1:1", "classid", classid, *htb])
        argv.append(["qdisc", "add", "dev", dev, "parent", classid, "bfifo", "limit", queue])
        if address is not None:
            u32 = ["u32", "match", "ip", match, f"{address}/32", "flowid", classid]
            argv.append(["filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", *u32])
    return argv


def python() -> str:
    return sys.executable
