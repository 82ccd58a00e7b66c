"""The magic packet, its recognition, and the rule that a packet only goes to a subnet the sender is on."""

from __future__ import annotations

import socket

import pytest

from tensorfleet_agent.runtime.wake_on_lan import (
    Subnet,
    check_broadcast,
    magic_packet,
    magic_packet_target,
    parse_mac,
    send_magic_packet,
)


def test_magic_packet_is_sync_then_mac_sixteen_times() -> None:
    packet = magic_packet("AA-bb-cc-dd-ee-01")
    assert len(packet) == 102
    assert packet[:6] == b"\xff" * 6
    assert packet[6:] == bytes.fromhex("aabbccddee01") * 16
    assert magic_packet_target(packet) == "aa:bb:cc:dd:ee:01"
    assert magic_packet_target(b"junk" + packet + b"\0\0\0\0") == "aa:bb:cc:dd:ee:01"  # anywhere in the payload


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff" * 6 + bytes.fromhex("aabbccddee01") * 15,  # one repetition short
        b"\xff" * 6 + bytes.fromhex("aabbccddee01") * 15 + bytes.fromhex("aabbccddee02"),
        b"\xff" * 102,
    ],
)
def test_what_is_not_a_magic_packet(data: bytes) -> None:
    assert magic_packet_target(data) is None


@pytest.mark.parametrize("text", ["aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:zz", "aa:bb-cc:dd:ee:ff", "00:00:00:00:00:00", ""])
def test_bad_macs_are_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="MAC"):
        parse_mac(text)


def test_a_broadcast_goes_only_to_a_subnet_of_this_machine() -> None:
    own = [Subnet("eth0", "10.77.0.5", 24)]
    assert check_broadcast("10.77.0.255", own).interface == "eth0"
    with pytest.raises(ValueError, match="not the broadcast address of a subnet of this machine"):
        check_broadcast("10.78.0.255", own)
    with pytest.raises(ValueError, match="not the broadcast address"):
        check_broadcast("10.77.0.7", own)  # a host of that subnet, not its broadcast
    with pytest.raises(ValueError, match="not an IPv4 broadcast address"):
        check_broadcast("example.com", own)


def test_the_packet_is_a_udp_broadcast_that_arrives() -> None:
    """127.255.255.255 is loopback's broadcast: a real SO_BROADCAST datagram that stays on this machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("0.0.0.0", 0))
        receiver.settimeout(5)
        send_magic_packet("02:00:00:00:00:07", Subnet("lo", "127.0.0.1", 8), receiver.getsockname()[1])
        data, _ = receiver.recvfrom(2048)
    assert magic_packet_target(data) == "02:00:00:00:00:07"
