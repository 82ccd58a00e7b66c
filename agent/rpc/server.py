"""The one place that builds gRPC servers (TLS and pairing plug in here)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

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


def create_server(
    registrations: Sequence[Registration],
    host: str,
    port: int,
    credentials: grpc.ServerCredentials | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
) -> tuple[grpc.aio.Server, int]:
    """Build a grpc.aio server with our options and bind it; port 0 picks a free one."""
    server = grpc.aio.server(options=list(SERVER_OPTIONS), interceptors=list(interceptors))
    for register in registrations:
        register(server)
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
