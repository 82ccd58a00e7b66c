"""Peer tickets and what a peer serves (issue 20): a ticket signed by a paired controller, not expired, reads only
the blobs of the versions it names that this agent holds; a chunk of an assembled file is served as its byte range."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent.core.errors import NotFound, PermissionDenied
from tensorfleet_agent.core.manifest import CHUNK_BYTES, ManifestEntry, manifest_bytes
from tensorfleet_agent.identity import Identity, load_or_create_identity
from tensorfleet_agent.runtime.blobs import BlobStore
from tensorfleet_agent.runtime.peer_blobs import PeerBlobs
from tensorfleet_agent.security.authority import AUTHORIZED_FILE, Authority, _write_json
from tensorfleet_agent.security.tickets import check_ticket, make_ticket


def _identity(tmp_path: Path, name: str, role: str) -> Identity:
    return load_or_create_identity(tmp_path / name, role)


def _authority(tmp_path: Path, *paired: Identity) -> Authority:
    directory = tmp_path / "agent-identity"
    agent = load_or_create_identity(directory, "agent")
    _write_json(
        directory / AUTHORIZED_FILE, {c.fingerprint: {"cert_pem": c.cert_pem.decode(), "paired_at": 0} for c in paired}
    )
    return Authority(directory, agent)


def test_a_ticket_from_a_paired_controller_is_accepted(tmp_path: Path) -> None:
    controller = _identity(tmp_path, "c", "controller")
    ticket, signature = make_ticket(controller, "reader1", ["b" * 64, "a" * 64], ttl=60, job_id="job-1")
    got = check_ticket(_authority(tmp_path, controller), ticket, signature)
    assert got.content_ids == {"a" * 64, "b" * 64}
    assert got.reader_node_id == "reader1" and got.job_id == "job-1"


def test_tickets_refused_expired_unsigned_unknown_controller_or_forged(tmp_path: Path) -> None:
    controller = _identity(tmp_path, "c", "controller")
    stranger = _identity(tmp_path, "s", "controller")
    authority = _authority(tmp_path, controller)
    ticket, signature = make_ticket(controller, "reader1", ["a" * 64], ttl=60)

    with pytest.raises(PermissionDenied, match="expired"):
        check_ticket(authority, *make_ticket(controller, "reader1", ["a" * 64], ttl=-5))
    with pytest.raises(PermissionDenied, match="unsigned"):
        check_ticket(authority, ticket, b"")
    with pytest.raises(PermissionDenied, match="not paired with this agent"):
        check_ticket(authority, *make_ticket(stranger, "reader1", ["a" * 64], ttl=60))
    # A ticket widened after signing (another version added) no longer matches the signature.
    widened = pb.PeerTicket.FromString(ticket)
    widened.content_ids.append("b" * 64)
    with pytest.raises(PermissionDenied, match="signature does not match"):
        check_ticket(authority, widened.SerializeToString(), signature)
    # The stranger names the paired controller's fingerprint but signs with its own key.
    forged = pb.PeerTicket(
        reader_node_id="r",
        controller_fingerprint=controller.fingerprint,
        content_ids=["a" * 64],
        expires_at=time.time() + 60,
    ).SerializeToString()
    with pytest.raises(PermissionDenied, match="signature does not match"):
        check_ticket(authority, forged, stranger.sign(forged))
    with pytest.raises(PermissionDenied, match="not a PeerTicket"):
        check_ticket(authority, b"\xff\xff\xff", signature)
    with pytest.raises(PermissionDenied, match="no peer ticket"):
        check_ticket(authority, b"", b"")


def _put(store: BlobStore, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    writer = store.writer(sha, len(data))
    writer.write(data)
    writer.commit()
    return sha


def test_a_peer_serves_only_blobs_of_the_ticket_versions_and_chunks_as_ranges_of_the_file(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", 1 << 30)
    big = os.urandom(CHUNK_BYTES + 1000)
    chunks = (hashlib.sha256(big[:CHUNK_BYTES]).hexdigest(), hashlib.sha256(big[CHUNK_BYTES:]).hexdigest())
    small = _put(store, b"small file")
    whole = _put(store, big)  # assembled: the chunk blobs are not kept
    v1 = _put(
        store,
        manifest_bytes(
            [ManifestEntry("a.txt", 0o644, small, 10), ManifestEntry("big.bin", 0o644, whole, len(big), chunks)]
        ),
    )
    other = _put(store, b"only in version 2")
    v2 = _put(store, manifest_bytes([ManifestEntry("b.txt", 0o644, other, 17)]))
    peer = PeerBlobs(store)

    def read(content_ids: list[str], sha: str, offset: int = 0) -> bytes:
        piece = peer.locate(content_ids, sha)
        return b"".join(peer.read(piece, offset))

    assert read([v1], small) == b"small file"
    assert read([v1], chunks[0]) == big[:CHUNK_BYTES]
    assert read([v1], chunks[1]) == big[CHUNK_BYTES:]
    assert read([v1], chunks[1], offset=600) == big[CHUNK_BYTES + 600 :]  # a resumed download
    assert read([v1], v1) == store.path(v1).read_bytes()
    with pytest.raises(PermissionDenied, match="not part of the dataset versions the ticket names"):
        peer.locate([v1], other)  # a blob of another version than the ticket's
    assert read([v1, v2], other) == b"only in version 2"
    with pytest.raises(NotFound, match="holds none of the ticket's dataset versions"):
        peer.locate(["c" * 64], small)
    store.path(whole).unlink()  # evicted: named, but not here
    with pytest.raises(NotFound, match="not in this agent's cache"):
        peer.locate([v1], chunks[0])
