"""Peer tickets (issue 20): what lets one agent read a dataset version's blobs from another.

The controller serializes a PeerTicket (reader, its own certificate fingerprint, the versions' content ids, expiry)
and signs those bytes with its identity key (`make_ticket`). A peer serves a blob only when `check_ticket` accepts
the ticket: signed by a controller paired with this agent (its certificate in authorized.json), not expired. The
ticket is the credential (GetPeerBlob is public to the session check); what it may read is decided by the blob
index (runtime/peer_blobs.py): a blob of one of its content ids that this agent holds.

No protobuf is imported here at import time (the controller's core may import this module): the encoding is
rpc/convert.py's, loaded when a ticket is first made or checked.
"""

from __future__ import annotations

import time

from tensorfleet_agent.core.errors import PermissionDenied, ValidationError
from tensorfleet_agent.core.types import PeerTicket
from tensorfleet_agent.identity import Identity, verify_signature
from tensorfleet_agent.security.authority import Authority

MAX_TICKET_BYTES = 64 * 1024


def make_ticket(
    identity: Identity | None,
    reader_node_id: str,
    content_ids: list[str],
    ttl: float,
    job_id: str = "",
    now: float | None = None,
) -> tuple[bytes, bytes]:
    """(ticket, signature) for `reader_node_id` to read the blobs of `content_ids` for `ttl` seconds. Without an
    identity (an --insecure controller, whose agents check no signature) the ticket is unsigned."""
    from tensorfleet_agent.rpc.convert import peer_ticket_to_bytes

    ticket = peer_ticket_to_bytes(
        PeerTicket(
            reader_node_id,
            identity.fingerprint if identity is not None else "",
            frozenset(content_ids),
            (time.time() if now is None else now) + ttl,
            job_id,
        )
    )
    return ticket, (identity.sign(ticket) if identity is not None else b"")


def check_ticket(authority: Authority | None, ticket: bytes, signature: bytes, now: float | None = None) -> PeerTicket:
    """The ticket, if a paired controller signed it and it has not expired; PermissionDenied naming why not.

    Without an authority (an --insecure agent: no pairing, plaintext on loopback) the signature is not checked,
    as every caller may run work there; the expiry and the scope still apply."""
    from tensorfleet_agent.rpc.convert import peer_ticket_from_bytes

    if not ticket:
        raise PermissionDenied("no peer ticket: the controller gives one with the task's dataset")
    if len(ticket) > MAX_TICKET_BYTES:
        raise PermissionDenied(f"the peer ticket is {len(ticket)} bytes; at most {MAX_TICKET_BYTES}")
    try:
        parsed = peer_ticket_from_bytes(ticket)
    except ValidationError:
        raise PermissionDenied("the peer ticket is not a PeerTicket message") from None
    fingerprint = parsed.controller_fingerprint
    if authority is not None:
        if not signature:
            raise PermissionDenied("the peer ticket is unsigned")
        entry = authority.authorized().get(fingerprint)
        if entry is None:
            raise PermissionDenied(
                f"the peer ticket is signed by controller {fingerprint[:16] or '(none named)'}, which is not paired "
                "with this agent"
            )
        if not verify_signature(str(entry["cert_pem"]).encode(), signature, ticket):
            raise PermissionDenied(
                f"the peer ticket's signature does not match controller {fingerprint[:16]}'s certificate"
            )
    now = time.time() if now is None else now
    if parsed.expires_at <= now:
        raise PermissionDenied(
            f"the peer ticket expired {now - parsed.expires_at:.0f} s ago (job {parsed.job_id or '?'}); the next "
            "dispatch brings a new one"
        )
    return parsed
