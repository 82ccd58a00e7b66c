"""Every AgentService RPC except GetInfo and the pairing/authentication ones needs a live session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent.rpc.handlers import aborting
from tensorfleet_agent.security.authority import Authority

SERVICE = pb.DESCRIPTOR.services_by_name["AgentService"].full_name
# GetPeerBlob: a peer agent has no session here; its controller-signed ticket is the credential (security/tickets.py).
PUBLIC_METHODS = frozenset({"GetInfo", "PairBegin", "PairFinish", "GetChallenge", "Authenticate", "GetPeerBlob"})
NOT_PAIRED = (
    "this agent only runs work for paired controllers: authenticate first "
    "(pair with `tensorfleet agents pair AGENT --token TOKEN`)"
)


def bearer(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return ""


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, authority: Authority) -> None:
        self.authority = authority

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        if service != SERVICE or method in PUBLIC_METHODS or handler is None:
            return handler
        token = bearer(handler_call_details.invocation_metadata)
        if token and self.authority.check(token) is not None:
            return handler
        return aborting(handler, grpc.StatusCode.UNAUTHENTICATED, NOT_PAIRED)
