"""What grpc_health_probe and grpcurl ask a server: the standard health check and server reflection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

Metadata = Sequence[tuple[str, str]]


async def health_status(channel: grpc.aio.Channel, service: str = "", metadata: Metadata = ()) -> str:
    """SERVING, NOT_SERVING, ... as grpc.health.v1.Health/Check names it."""
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5, metadata=metadata)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def health_changes(channel: grpc.aio.Channel, service: str = "") -> AsyncIterator[str]:
    """grpc.health.v1.Health/Watch, as a load balancer follows it: the status now, then each change."""
    stub = health_pb2_grpc.HealthStub(channel)
    async for reply in stub.Watch(health_pb2.HealthCheckRequest(service=service)):
        yield str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def _reflect(
    channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest, metadata: Metadata
) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    async for reply in stub.ServerReflectionInfo(iter([request]), timeout=5, metadata=metadata):
        if reply.HasField("error_response"):
            raise AssertionError(f"reflection error: {reply.error_response.error_message}")
        return reply
    raise AssertionError("no reflection reply")


async def reflected_services(channel: grpc.aio.Channel, metadata: Metadata = ()) -> set[str]:
    reply = await _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""), metadata)
    return {s.name for s in reply.list_services_response.service}


async def reflected_methods(channel: grpc.aio.Channel, service: str, metadata: Metadata = ()) -> set[str]:
    """The methods a client without our .proto files learns from the server (what `grpcurl describe` shows)."""
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
    reply = await _reflect(channel, request, metadata)
    package, _, name = service.rpartition(".")
    for raw in reply.file_descriptor_response.file_descriptor_proto:
        file = descriptor_pb2.FileDescriptorProto.FromString(raw)
        for svc in file.service:
            if file.package == package and svc.name == name:
                return {m.name for m in svc.method}
    raise AssertionError(f"{service} is not in the files reflection returned")
