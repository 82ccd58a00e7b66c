"""Wake-on-LAN: the magic packet, sent by the controller or relayed by an agent on the sleeping machine's subnet.

A magic packet is 6 x 0xFF then the MAC 16 times, sent as a UDP broadcast (port 9) to the subnet's broadcast
address: a broadcast does not cross routers, so a controller on another subnet asks an online agent on that one
(AgentService.SendWakePacket). Either side sends only to the broadcast address of a subnet it has an address on:
nobody can use it to send packets elsewhere.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

import psutil

WAKE_PORT = 9  # discard: what NICs listen for, and what nothing else answers
_SYNC = b"\xff" * 6
_MAC = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")


def parse_mac(text: str) -> bytes:
    """A MAC as 6 bytes, from aa:bb:cc:dd:ee:ff, aa-bb-..., or aabbccddeeff (any case)."""
    mac = text.strip().lower()
    if not _MAC.match(mac):
        raise ValueError(f"not a MAC address (aa:bb:cc:dd:ee:ff): {text[:40]!r}")
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if raw in (b"\0" * 6, b"\xff" * 6):
        raise ValueError(f"not a machine's MAC address: {text[:40]!r}")
    return raw


def format_mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def magic_packet(mac: str) -> bytes:
    return _SYNC + parse_mac(mac) * 16


def magic_packet_target(data: bytes) -> str | None:
    """The MAC a magic packet wakes (anywhere in the payload, as NICs look for it), or None if it is not one."""
    start = data.find(_SYNC)
    while start >= 0:
        body = data[start + 6 : start + 6 + 96]
        if len(body) < 96:
            return None
        raw = body[:6]
        if body == raw * 16 and raw != b"\xff" * 6:
            return format_mac(raw)
        start = data.find(_SYNC, start + 1)
    return None


@dataclass(frozen=True)
class Subnet:
    """An IPv4 address this machine has, and its subnet."""

    interface: str
    address: str
    prefix_length: int

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.address}/{self.prefix_length}", strict=False)

    @property
    def broadcast(self) -> str:
        return str(self.network.broadcast_address)


def local_subnets() -> list[Subnet]:
    """This machine's IPv4 subnets that can carry a broadcast (loopback and /31, /32 left out). Blocking
    (psutil): call it through a thread from async code."""
    out = []
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        for a in addrs:
            if a.family != socket.AF_INET or not a.address or not a.netmask:
                continue
            subnet = Subnet(name, a.address, ipaddress.IPv4Network(f"0.0.0.0/{a.netmask}").prefixlen)
            if subnet.network.is_loopback or subnet.prefix_length >= 31:
                continue
            out.append(subnet)
    return out


def subnet_for(broadcast: str, subnets: list[Subnet]) -> Subnet | None:
    """The subnet whose broadcast address `broadcast` is, among `subnets`; None when it is none of them."""
    try:
        target = ipaddress.IPv4Address(broadcast.strip())
    except ValueError:
        return None
    return next((s for s in subnets if s.network.broadcast_address == target), None)


def check_broadcast(broadcast: str, subnets: list[Subnet]) -> Subnet:
    """The subnet to send on, or ValueError saying why this machine will not send there."""
    try:
        ipaddress.IPv4Address(broadcast.strip())
    except ValueError:
        raise ValueError(f"not an IPv4 broadcast address: {broadcast[:60]!r}") from None
    subnet = subnet_for(broadcast, subnets)
    if subnet is None:
        own = ", ".join(f"{s.broadcast} ({s.interface})" for s in subnets) or "none"
        raise ValueError(f"{broadcast} is not the broadcast address of a subnet of this machine (its own: {own})")
    return subnet


def send_magic_packet(mac: str, subnet: Subnet, port: int = WAKE_PORT) -> None:
    """Broadcast the magic packet for `mac` on `subnet` (from its address, so it leaves by that interface).
    Blocking but instant (one datagram): call it through a thread from async code."""
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1..65535, got {port}")
    packet = magic_packet(mac)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind((subnet.address, 0))
        sock.sendto(packet, (subnet.broadcast, port))
