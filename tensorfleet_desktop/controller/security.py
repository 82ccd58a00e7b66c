"""ControllerService needs the client token on every call, loopback included; only grpc.health.v1 is open, and
JoinCluster, which a pool agent's join credential admits (checked by its handler, controller/pools/members.py)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from tensorfleet_agent.rpc.handlers import aborting
from tensorfleet_agent.security.interceptor import bearer

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)  # load balancers and probes hold no token
# A joining pool agent holds no client token: its join credential, checked by the handler itself, admits it
CREDENTIAL_METHODS = ("/tensorfleet.v1.ControllerService/JoinCluster",)


def refusal(token_file: str, connection_file: str = "") -> str:
    """Where a client finds the token: said in every refusal."""
    same_user = f"clients run by this controller's OS user read it from {connection_file}; " if connection_file else ""
    return (
        f"this controller needs its client token on every call: {same_user}"
        f"otherwise set TENSORFLEET_CONTROLLER_TOKEN to the token in {token_file} (client.token in its data dir)"
    )


class ClientTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, token: str, message: str = refusal("client.token in the controller's data dir")) -> None:
        self._token = token.encode()
        self.message = message

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES) or method in CREDENTIAL_METHODS:
            return handler
        given = bearer(handler_call_details.invocation_metadata).encode()
        if hmac.compare_digest(given, self._token):
            return handler
        return aborting(handler, grpc.StatusCode.UNAUTHENTICATED, self.message)
