"""What the LAN advertises is untrusted: sanitized on both sides, refused services listed with a reason and
logged once, TLS failures said as sentences, and a pin never lost when an agent is re-added."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from pathlib import Path

import pytest

from tensorfleet_agent.core.version import PROTOCOL_VERSION
from tensorfleet_agent.discovery.advertise import AdvertisedAgent
from tensorfleet_agent.discovery.browse import DiscoveredAgent, clean_text, discovered, parse_txt
from tensorfleet_agent.identity import load_or_create_identity
from tensorfleet_agent.rpc.client import fetch_certificate_blocking
from tensorfleet_agent.security.secrets import cluster_id_of
from tensorfleet_desktop import wire
from tensorfleet_desktop.controller import fleet as fleet_module
from tensorfleet_desktop.controller.fleet import AgentRecord, Fleet, Impersonation, unreachable

NODE = "0123456789abcdef0123"
HOSTILE = "evil\x1b[31m\nERROR forged log line\x07\u202eban" + "x" * 300


def txt(**overrides: str) -> dict[bytes, bytes]:
    body = {"node_id": NODE, "name": "gpu-1", "proto": str(PROTOCOL_VERSION), "cluster": cluster_id_of("token-a")}
    body.update(overrides)
    return {k.encode(): v.encode() for k, v in body.items()}


def test_clean_text_strips_control_characters_and_length() -> None:
    cleaned = clean_text(HOSTILE)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or c == "\u202e" for c in cleaned)
    assert len(cleaned) <= 64 and cleaned.startswith("evil?[31m?ERROR forged log line")


def test_txt_is_parsed_and_sanitized() -> None:
    clean, problem = parse_txt(txt(name=HOSTILE))
    assert problem == "" and clean["node_id"] == NODE and "\n" not in clean["name"] and "\x1b" not in clean["name"]
    found = discovered("x\n._tensorfleet._tcp.local.", txt(name=HOSTILE), ("127.0.0.1",), 5000)
    assert found.problem == "" and "\n" not in found.instance and found.protocol_version == PROTOCOL_VERSION
    assert "no node_id" in parse_txt(txt(node_id=""))[1]
    assert "not 20 hex digits" in parse_txt(txt(node_id="../../etc\n"))[1]
    assert "not a number" in parse_txt(txt(proto="one"))[1]
    assert "no IPv4 address" in discovered("x", txt(), (), 5000).problem
    assert parse_txt({b"node_id": b"\xff\xfe", b"proto": None})[1]  # undecodable bytes and empty values: no crash


def test_advertised_name_never_carries_control_characters(caplog: pytest.LogCaptureFixture) -> None:
    def agent() -> AdvertisedAgent:
        return AdvertisedAgent(NODE, "bad\x1b]0;pwned\x07name\n", 1, ("127.0.0.1",), PROTOCOL_VERSION, 0, 1)

    with caplog.at_level(logging.WARNING):
        first, again = agent(), agent()
    assert first.txt()["name"] == again.txt()["name"] == "bad?]0;pwned?name"
    assert len([r for r in caplog.records if "control characters" in r.getMessage()]) == 1


def found(instance: str = "svc._tensorfleet._tcp.local.", **overrides: str) -> DiscoveredAgent:
    return discovered(instance, txt(**overrides), ("127.0.0.1",), 5000)


def test_refused_services_are_listed_with_a_reason_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    fleet = Fleet(cluster_token="token-a")
    with caplog.at_level(logging.WARNING, logger=fleet_module.__name__):
        for _ in range(5):  # every mDNS update and re-announcement
            fleet.on_mdns(
                "other._tensorfleet._tcp.local.",
                found("other._tensorfleet._tcp.local.", cluster=cluster_id_of("token-b"), name=HOSTILE),
            )
            fleet.on_mdns(
                "bad\x1b[2J\n._tensorfleet._tcp.local.", found("bad\x1b[2J\n._tensorfleet._tcp.local.", cluster="x")
            )
            fleet.on_mdns(
                "old._tensorfleet._tcp.local.", found("old._tensorfleet._tcp.local.", proto="0", node_id="1" * 20)
            )
            fleet.on_mdns("junk._tensorfleet._tcp.local.", found("junk._tensorfleet._tcp.local.", node_id="not-a-node"))
            fleet.on_mdns(
                "lone._tensorfleet._tcp.local.", found("lone._tensorfleet._tcp.local.", cluster="", node_id="2" * 20)
            )
    assert fleet.agents == {}
    reasons = {key.split(".")[0]: entry.reason for key, entry in fleet.refused.items()}
    assert len(reasons) == 5
    assert "another cluster" in reasons["other"] and "TENSORFLEET_CLUSTER_TOKEN" in reasons["other"]
    assert "protocol 0" in reasons["old"]
    assert "unusable mDNS record" in reasons["junk"] and "20 hex digits" in reasons["junk"]
    assert "no cluster token" in reasons["lone"]
    assert [e.instance for e in fleet.refused.values() if e.instance.startswith("bad")] == [
        "bad?[2J?._tensorfleet._tcp.local."
    ]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 5, warnings
    assert not any("\x1b" in w or "\n" in w for w in warnings)
    # the same service with another reason is reported again; a goodbye forgets it
    fleet.on_mdns("old._tensorfleet._tcp.local.", found("old._tensorfleet._tcp.local.", proto="99", node_id="1" * 20))
    assert len(caplog.records) == 6
    fleet.on_mdns("old._tensorfleet._tcp.local.", None)
    assert "old._tensorfleet._tcp.local." not in fleet.refused
    # the listing (ListAgents with include_refused) carries the reason
    entry = wire.refused_from_pb(wire.refused_to_pb(fleet.refused["other._tensorfleet._tcp.local."]))
    assert entry["state"] == "REFUSED" and entry["refused"] == reasons["other"] and "\n" not in entry["name"]


def test_refusals_are_bounded() -> None:
    fleet = Fleet(cluster_token="token-a")
    for i in range(fleet_module.MAX_REFUSED + 50):
        fleet.on_mdns(f"s{i}._tensorfleet._tcp.local.", found(f"s{i}._tensorfleet._tcp.local.", cluster="someone-else"))
    assert len(fleet.refused) == fleet_module.MAX_REFUSED


async def test_a_changed_certificate_is_refused_with_a_sentence_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fleet = Fleet(identity=load_or_create_identity(tmp_path, "controller"), pins={NODE: "a" * 64})
    attempts = 0
    sentence = fleet_module.changed_certificate("gpu-1", "b" * 64, "a" * 64)

    async def connect(record: AgentRecord) -> None:
        nonlocal attempts
        attempts += 1
        raise Impersonation(sentence)

    real_sleep = asyncio.sleep
    monkeypatch.setattr(fleet, "_connect", connect)
    monkeypatch.setattr(fleet_module.asyncio, "sleep", lambda _s: real_sleep(0))  # retries without waiting
    with caplog.at_level(logging.WARNING, logger=fleet_module.__name__):
        record = fleet.remember(NODE, "127.0.0.1:5000", "manual", "gpu-1")
        while attempts < 5:
            await real_sleep(0.01)
        await fleet.stop()
    assert record.public_state() == "REFUSED" and record.to_dict()["error"] == sentence
    assert sentence.startswith("agent gpu-1 presents certificate bbbbbbbbbbbbbbbb, pinned is aaaaaaaaaaaaaaaa")
    assert "re-pair with --force if it was reinstalled" in sentence
    assert len([r for r in caplog.records if "presents certificate" in r.getMessage()]) == 1


def test_tls_failures_are_sentences() -> None:
    text = unreachable("127.0.0.1:50051", ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"))
    assert "does not complete a TLS handshake" in text and "--insecure" in text
    assert "connection refused" in unreachable("h:1", ConnectionRefusedError(111, "Connection refused"))
    assert "did not answer in time" in unreachable("h:1", TimeoutError())


async def test_persisting_a_known_agent_keeps_its_pin() -> None:
    saved: list[dict[str, str]] = []
    fleet = Fleet(pins={NODE: "f" * 64}, persist=lambda r: saved.append({"fingerprint": r.fingerprint}))
    record = fleet.remember(NODE, "127.0.0.1:5000", "manual", "gpu-1")  # after a restart: not yet connected
    try:
        fleet.persist(record)  # what AddAgent on the same agent does
    finally:
        await fleet.stop()
    assert saved == [{"fingerprint": "f" * 64}]


def test_a_plaintext_port_is_a_sentence_not_an_ssl_error() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        address = f"127.0.0.1:{server.getsockname()[1]}"

        def answer_plaintext() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer_plaintext, daemon=True)
        thread.start()
        with pytest.raises(ssl.SSLError) as err:
            fetch_certificate_blocking(address, timeout=5)
        thread.join(5)
    text = unreachable(address, err.value)
    assert text.startswith(f"{address} does not complete a TLS handshake as an agent does (")
    assert "[SSL" not in text and "_ssl.c" not in text
