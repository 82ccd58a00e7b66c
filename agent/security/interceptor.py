"""Every AgentService RPC except GetInfo and the pairing/authentication ones needs a live session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent.security.authority import Authority

SERVICE = pb.DESCRIPTOR.services_by_name["AgentService"].full_name
PUBLIC_METHODS = frozenset({"GetInfo", "PairBegin", "PairFinish", "GetChallenge", "Authenticate"})
NOT_PAIRED = (
    "this agent only runs work for paired controllers: authenticate first "
    "(pair with `tensorfleet agents pair AGENT --token TOKEN`)"
)


def bearer(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return ""


def _denying(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, NOT_PAIRED)

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, NOT_PAIRED)
        yield None  # pragma: no cover - abort raises

    kwargs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny_stream, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)


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
        return _denying(handler)
