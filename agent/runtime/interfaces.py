"""The machine's network interfaces as Wake-on-LAN needs them: MAC, IPv4 subnet, and whether WoL is on.

Whether a NIC wakes on a magic packet is read from `ethtool IFACE` ("Wake-on: g") once at start, where ethtool
exists; the owner can assert it with `--wol IFACE[,IFACE]` or `--wol all` (a NIC ethtool cannot read, or a VM).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import shutil
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

from tensorfleet_agent.core.types import NetInterface

log = logging.getLogger(__name__)
ETHTOOL_TIMEOUT = 3.0


@dataclass(frozen=True)
class WolFlag:
    """--wol: the interfaces the owner says wake on a magic packet (`all`: every one with a MAC)."""

    names: frozenset[str] = frozenset()
    all: bool = False

    @classmethod
    def parse(cls, text: str | None) -> WolFlag:
        items = [item.strip() for item in (text or "").split(",") if item.strip()]
        if items == ["all"]:
            return cls(all=True)
        if "all" in items:
            raise ValueError(f"--wol takes `all` or a comma list of interface names, not both: {text!r}")
        return cls(names=frozenset(items))

    def covers(self, name: str) -> bool:
        return self.all or name in self.names


def _mac(addrs: Iterable[Any]) -> str:
    for a in addrs:
        if a.family == psutil.AF_LINK and a.address and a.address.count(":") == 5:
            mac = str(a.address).lower()
            if mac != "00:00:00:00:00:00":
                return mac
    return ""


def list_interfaces(
    wol_flag: WolFlag | None = None, ethtool_wol: Mapping[str, bool] | None = None
) -> tuple[NetInterface, ...]:
    """Interfaces with a MAC, loopback left out. Blocking (psutil): call through a thread from async code."""
    wol_flag = wol_flag or WolFlag()
    ethtool_wol = ethtool_wol or {}
    stats = psutil.net_if_stats()
    out = []
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        mac = _mac(addrs)
        if not mac or name == "lo" or "loopback" in getattr(stats.get(name), "flags", ""):
            continue
        ipv4, prefix, broadcast = "", 0, ""
        for a in addrs:
            if a.family == socket.AF_INET and a.address and not a.address.startswith("127."):
                net = ipaddress.IPv4Interface(f"{a.address}/{a.netmask or '32'}").network
                ipv4, prefix = a.address, net.prefixlen
                # the subnet's broadcast from address and prefix: what the kernel reports can be unset, or the
                # interface's own address on one configured without `brd` (a veth set up by `ip addr add`)
                broadcast = str(net.broadcast_address) if prefix < 31 else (a.broadcast or "")
                break
        if wol_flag.covers(name):
            wol, source = True, "flag"
        elif name in ethtool_wol:
            wol, source = ethtool_wol[name], "ethtool"
        else:
            wol, source = False, ""
        out.append(NetInterface(name, mac, ipv4, prefix, broadcast, wol, source))
    return tuple(out)


def parse_ethtool(output: str) -> bool | None:
    """`ethtool IFACE`'s "Wake-on: g" line: True when magic-packet wake is on, None when the line is missing."""
    for line in output.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key == "Wake-on":  # not "Supports Wake-on"
            return "g" in value.strip()
    return None


async def probe_ethtool(names: Iterable[str]) -> dict[str, bool]:
    """Ask ethtool about each interface (where ethtool exists); one it cannot read is left out (unknown)."""
    ethtool = shutil.which("ethtool") or next(
        (p for p in ("/usr/sbin/ethtool", "/sbin/ethtool") if shutil.which(p)), None
    )
    if ethtool is None:
        return {}
    out: dict[str, bool] = {}
    for name in names:
        try:
            proc = await asyncio.create_subprocess_exec(
                ethtool, name, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
            )
        except OSError as exc:
            log.info("ethtool %s: %s", name, exc)
            return out
        try:
            stdout, _ = await asyncio.wait_for(proc.communicate(), ETHTOOL_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.info("ethtool %s did not answer within %gs", name, ETHTOOL_TIMEOUT)
            continue
        wol = parse_ethtool(stdout.decode(errors="replace"))
        if wol is not None:
            out[name] = wol
    return out
