"""The one place that builds gRPC servers (TLS and pairing plug in here).

Every server also answers the standard grpc.health.v1.Health service and server reflection, so grpcurl,
grpc_health_probe and load balancers work against the controller and every agent without our proto files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio  # what grpc_health.v1.health.aio names
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

MAX_MESSAGE_BYTES = 8 * 1024 * 1024

SERVER_OPTIONS: Sequence[tuple[str, int]] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.so_reuseport", 0),
)

Registration = Callable[[grpc.aio.Server], None]


class BindError(RuntimeError):
    pass


def tls_server_credentials(key_pem: bytes, cert_pem: bytes) -> grpc.ServerCredentials:
    """Server-side TLS with our self-signed certificate; callers pin it by fingerprint."""
    return grpc.ssl_server_credentials([(key_pem, cert_pem)], require_client_auth=False)


def is_loopback(host: str) -> bool:
    return host.startswith("127.") or host in ("localhost", "::1")


HEALTH_SERVICE = grpc_health.SERVICE_NAME
REFLECTION_SERVICE = reflection.SERVICE_NAME


class Health:
    """What grpc.health.v1.Health answers for one server: SERVING from the start, NOT_SERVING once its
    daemon begins to drain or stop, so a probe or load balancer stops sending work before the port closes.

    Answers for the whole server ("") and for each named service (e.g. "tensorfleet.v1.AgentService")."""

    def __init__(self, services: Sequence[str] = ()) -> None:
        self.services = tuple(services)
        self.servicer = health_aio.HealthServicer()
        for name in self.services:  # its set() is a coroutine; the servers are built outside the loop's tasks
            self.servicer._server_status[name] = health_pb2.HealthCheckResponse.SERVING

    async def not_serving(self) -> None:
        """Permanent: a draining or stopping daemon never serves again (a restart builds a new server)."""
        await self.servicer.enter_graceful_shutdown()


def create_server(
    registrations: Sequence[Registration],
    host: str,
    port: int,
    credentials: grpc.ServerCredentials | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    health: Health | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Build a grpc.aio server with our options, health and reflection, and bind it; port 0 picks a free one.

    `health` names the services registered here (reflection lists them) and is the handle the daemon flips
    to NOT_SERVING; without it the server still answers SERVING for ""."""
    health = health or Health()
    server = grpc.aio.server(options=list(SERVER_OPTIONS), interceptors=list(interceptors))
    for register in registrations:
        register(server)
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    reflection.enable_server_reflection((*health.services, HEALTH_SERVICE, REFLECTION_SERVICE), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = (
            server.add_secure_port(address, credentials)
            if credentials is not None
            else server.add_insecure_port(address)
        )
    except RuntimeError as exc:
        raise BindError(f"cannot listen on {address}: {exc}") from None
    if bound == 0:
        raise BindError(f"cannot listen on {address} (address in use or not available on this machine)")
    return server, bound
