"""The one table from the controller's errors to gRPC status codes (the wire layer's only view of them)."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_desktop.controller.errors import AgentCallError, JobError, NotFoundError
from tensorfleet_desktop.controller.fleet import AgentNotFound, FleetError
from tensorfleet_desktop.controller.registry import BlobDamaged, ModelNotFound, RegistryError
from tensorfleet_desktop.controller.store.base import StoreFullError, full_message, is_disk_full

log = logging.getLogger(__name__)

_DATA_DIR: list[Path | None] = [None]  # the serving controller's data dir, for disk-full messages

#: First match wins.
_TABLE: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (ValidationError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (RegistryError, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (JobError, grpc.StatusCode.FAILED_PRECONDITION),
    (AgentNotFound, grpc.StatusCode.NOT_FOUND),
    (FleetError, grpc.StatusCode.FAILED_PRECONDITION),
    # an agent's refusal or absence passed on (ListAgentEnvs): never UNAVAILABLE, which clients read as the
    # controller being away
    (AgentCallError, grpc.StatusCode.FAILED_PRECONDITION),
    (BlobDamaged, grpc.StatusCode.DATA_LOSS),
    (StoreFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
)


def set_data_dir(data_dir: Path | None) -> None:
    """The data dir disk-full refusals name (one controller per process)."""
    _DATA_DIR[0] = data_dir


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    for kind, code in _TABLE:
        if isinstance(exc, kind):
            return code, str(exc)
    if is_disk_full(exc):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, full_message(full_dir(exc, _DATA_DIR[0]))
    log.exception("internal error")
    return grpc.StatusCode.INTERNAL, f"internal controller error: {type(exc).__name__}: {exc}"


def full_dir(exc: Exception, data_dir: Path | None) -> Path:
    """Where to measure and name a full disk: the controller's data dir, unless the write that failed was an
    absolute path outside it (then that file's directory). Never the process's working directory."""
    filename = str(getattr(exc, "filename", "") or "")
    if filename and Path(filename).is_absolute():
        failed = Path(filename).parent
        if data_dir is None or not failed.is_relative_to(data_dir):
            return failed
    return data_dir if data_dir is not None else Path(filename or ".").resolve().parent
