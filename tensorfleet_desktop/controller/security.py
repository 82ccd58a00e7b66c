"""ControllerService beyond loopback: TLS plus a bearer client token on every call."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from tensorfleet_agent.rpc.handlers import aborting
from tensorfleet_agent.security.interceptor import bearer

REFUSED = "this controller needs its client token: set TENSORFLEET_CONTROLLER_TOKEN (see client.token in its data dir)"


class ClientTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        given = bearer(handler_call_details.invocation_metadata).encode()
        if handler is None or hmac.compare_digest(given, self._token):
            return handler
        return aborting(handler, grpc.StatusCode.UNAUTHENTICATED, REFUSED)
