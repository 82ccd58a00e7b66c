"""The one table from the controller's errors to what kind of failure each is. The gRPC face turns a kind into a
status code (rpc_errors.py), the HTTP face into a status and a problem document (http/problems.py), so both say
the same thing about the same error."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from pathlib import Path

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_desktop.controller.errors import AgentCallError, JobError, NotFoundError
from tensorfleet_desktop.controller.fleet import AgentNotFound, FleetError
from tensorfleet_desktop.controller.principals import PermissionDenied, Unauthenticated
from tensorfleet_desktop.controller.registry import BlobDamaged, ModelNotFound, RegistryError
from tensorfleet_desktop.controller.store.base import StoreFullError, full_message, is_disk_full

log = logging.getLogger(__name__)


class Kind(enum.StrEnum):
    INVALID = "invalid"  # the request names a field it got wrong
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"  # valid, but not in the job's (agent's, model's) present state
    DATA_LOSS = "data_loss"  # a stored file no longer matches its hash
    FULL = "full"  # the controller's disk or store is out of space
    INTERNAL = "internal"
    DENIED = "denied"  # the caller's role or ownership does not allow it (issue 24)
    UNAUTHENTICATED = "unauthenticated"  # no such token, or a revoked one


@dataclass(frozen=True)
class Failure:
    kind: Kind
    message: str
    field: str = ""  # the request field at fault (INVALID), when the error names one


_DATA_DIR: list[Path | None] = [None]  # the serving controller's data dir, for disk-full messages

#: First match wins.
_TABLE: tuple[tuple[type[Exception], Kind], ...] = (
    (ValidationError, Kind.INVALID),
    (PermissionDenied, Kind.DENIED),
    (Unauthenticated, Kind.UNAUTHENTICATED),
    (NotFoundError, Kind.NOT_FOUND),
    (RegistryError, Kind.INVALID),
    (ModelNotFound, Kind.NOT_FOUND),
    (JobError, Kind.CONFLICT),
    (AgentNotFound, Kind.NOT_FOUND),
    (FleetError, Kind.CONFLICT),
    # an agent's refusal or absence passed on (envs): never "unavailable", which clients read as the controller
    # being away
    (AgentCallError, Kind.CONFLICT),
    (BlobDamaged, Kind.DATA_LOSS),
    (StoreFullError, Kind.FULL),
)


#: The error classes the table names (a face may register a handler per class).
CLASSIFIED: tuple[type[Exception], ...] = tuple(kind for kind, _ in _TABLE)


def set_data_dir(data_dir: Path | None) -> None:
    """The data dir disk-full refusals name (one controller per process)."""
    _DATA_DIR[0] = data_dir


def classify(exc: Exception) -> Failure:
    for kind, what in _TABLE:
        if isinstance(exc, kind):
            return Failure(what, str(exc), str(getattr(exc, "field", "") or ""))
    if is_disk_full(exc):
        return Failure(Kind.FULL, full_message(full_dir(exc, _DATA_DIR[0])))
    log.exception("internal error")
    return Failure(Kind.INTERNAL, f"internal controller error: {type(exc).__name__}: {exc}")


def full_dir(exc: Exception, data_dir: Path | None) -> Path:
    """Where to measure and name a full disk: the controller's data dir, unless the write that failed was an
    absolute path outside it (then that file's directory). Never the process's working directory."""
    filename = str(getattr(exc, "filename", "") or "")
    if filename and Path(filename).is_absolute():
        failed = Path(filename).parent
        if data_dir is None or not failed.is_relative_to(data_dir):
            return failed
    return data_dir if data_dir is not None else Path(filename or ".").resolve().parent
