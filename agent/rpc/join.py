"""JoinCluster: the one call an agent makes to a controller, when a pool's allocation (or a pod) started it.

The agent pins the controller by the certificate fingerprint its join credential carries (plaintext only to a
controller that serves it on loopback), says where it listens and which certificate it presents, and the
controller then dials it and pairs with the same credential as the agent's one-time join token.
"""

from __future__ import annotations

import grpc

from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_agent._generated import controller_pb2_grpc as cpb_grpc
from tensorfleet_agent.identity import node_id_of_cert
from tensorfleet_agent.rpc.client import create_channel, fetch_certificate, pinned_credentials
from tensorfleet_agent.rpc.server import is_loopback
from tensorfleet_agent.security.join_credential import CredentialError, read_claims

JOIN_TIMEOUT = 15.0  # seconds one JoinCluster may take (the controller dials this agent back meanwhile)


class JoinError(Exception):
    """The controller cannot be reached or verified (`final`: False, worth retrying) or refused the join
    (`final`: True)."""

    def __init__(self, message: str, final: bool) -> None:
        super().__init__(message)
        self.final = final


FINAL_CODES = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
)


async def _channel(controller: str, credential: str) -> grpc.aio.Channel:
    try:
        claims = read_claims(credential)
    except CredentialError as exc:
        raise JoinError(str(exc), final=True) from None
    host = controller.rpartition(":")[0].strip("[]")
    if not claims.tls:
        if not is_loopback(host):
            raise JoinError(
                f"the credential is for a controller serving plaintext on loopback, not {controller}", final=True
            )
        return create_channel(controller)
    try:
        cert = await fetch_certificate(controller, timeout=5)
    except OSError as exc:
        raise JoinError(f"cannot reach the controller at {controller}: {exc}", final=False) from None
    node_id, fingerprint = node_id_of_cert(cert)
    if fingerprint != claims.fingerprint:
        raise JoinError(
            f"the controller at {controller} presents certificate {fingerprint[:16]}, not {claims.fingerprint[:16]} "
            "named by the join credential: refusing it",
            final=True,
        )
    return create_channel(controller, pinned_credentials(cert), node_id)


async def join_cluster(
    controller: str,
    credential: str,
    *,
    address: str,
    node_id: str,
    cert_fingerprint: str,
    allocation_id: str = "",
    hostname: str = "",
) -> str:
    """Announce this agent to `controller`; the node id it knows the agent by. JoinError otherwise."""
    claims_pool = read_claims(credential).pool if credential.startswith("tfjc1.") else ""
    channel = await _channel(controller, credential)
    try:
        stub = cpb_grpc.ControllerServiceStub(channel)
        request = cpb.JoinClusterRequest(
            credential=credential,
            address=address,
            node_id=node_id,
            cert_fingerprint=cert_fingerprint,
            pool=claims_pool,
            allocation_id=allocation_id,
            hostname=hostname,
        )
        try:
            answer = await stub.JoinCluster(request, timeout=JOIN_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise JoinError(f"{exc.code().name}: {exc.details()}", final=exc.code() in FINAL_CODES) from None
        return str(answer.agent_id)
    finally:
        await channel.close(None)
