"""A failure's kind as a gRPC status code (the kinds themselves are decided in failures.py)."""

from __future__ import annotations

import grpc

from tensorfleet_desktop.controller.failures import Kind, classify, full_dir, set_data_dir

__all__ = ["full_dir", "set_data_dir", "status_of"]

_CODES = {
    Kind.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    Kind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Kind.CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
    Kind.DATA_LOSS: grpc.StatusCode.DATA_LOSS,
    Kind.FULL: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Kind.INTERNAL: grpc.StatusCode.INTERNAL,
    Kind.DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Kind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
}


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    failure = classify(exc)
    return _CODES[failure.kind], failure.message
