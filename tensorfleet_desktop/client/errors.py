"""The SDK's errors: one class per thing a caller can do something about; `code` is the gRPC status name."""

from __future__ import annotations

import grpc


class TensorFleetError(Exception):
    """Base of SDK errors; `code` is the gRPC status name."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class InvalidRequest(TensorFleetError):
    """The controller refused the input (bad spec, wrong state); the message names the problem."""


class PermissionDenied(InvalidRequest):
    """The caller's role (or the job's owner) does not allow the call (issue 24); an InvalidRequest as before."""


class NotFound(TensorFleetError):
    pass


class ControllerUnreachable(TensorFleetError):
    pass


class ControllerFull(TensorFleetError):
    """The controller cannot save (its data dir is full): nothing was changed; retry once space is freed."""


class DataLoss(TensorFleetError):
    """The controller's stored data is missing or damaged (a model file that no longer hashes right)."""


def translate(exc: grpc.RpcError, address: str) -> TensorFleetError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code else "UNKNOWN"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ControllerUnreachable(f"cannot reach the TensorFleet controller at {address}: {details}", name)
    if code in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.OUT_OF_RANGE,
    ):
        return InvalidRequest(str(details), name)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(str(details), name)
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFound(str(details), name)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and ("data dir full" in str(details) or "disk space" in str(details)):
        return ControllerFull(str(details), name)
    if code is grpc.StatusCode.DATA_LOSS:
        return DataLoss(str(details), name)
    return TensorFleetError(f"{name}: {details}", name)
