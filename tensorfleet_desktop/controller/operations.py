"""What the controller's faces (gRPC in service.py, HTTP in http/) do with a request beyond a single core call:
receiving a dataset upload, exporting a model for download, reading a job's metrics and logs, listing models by
page. Both faces call these, so the limits and the messages are the same whichever a client speaks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensorfleet_agent.core.digest import file_digest
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.validation import check_id
from tensorfleet_desktop.controller.core import Controller
from tensorfleet_desktop.controller.datasets import DatasetError
from tensorfleet_desktop.controller.model import JobEventRecord
from tensorfleet_desktop.controller.registry import model_config

if TYPE_CHECKING:  # the fleet speaks gRPC: the core imports it for type checks only
    from tensorfleet_desktop.controller.fleet import AgentRecord, Fleet

MAX_DATASET_BYTES = 8 << 30


async def receive_dataset(
    c: Controller, name: str, filename: str, size: int, sha256: str, chunks: AsyncIterator[bytes]
) -> dict[str, Any]:
    """Store an upload of `size` bytes under `name`: written to a scratch file as it arrives, checked (size,
    sha256 when given, parseable), then adopted; a failed upload leaves nothing behind."""
    check_id(name, "name")
    if not filename or "/" in filename or "\\" in filename or len(filename) > 200:
        raise ValidationError("filename", f"must be a plain file name, got {filename[:80]!r}")
    if not 0 < size <= MAX_DATASET_BYTES:
        raise ValidationError("size", f"must be between 1 and {MAX_DATASET_BYTES} bytes, got {size}")
    incoming = c.blobs_dir / "incoming"
    await asyncio.to_thread(incoming.mkdir, parents=True, exist_ok=True)
    tmp = incoming / f"upload-{uuid.uuid4().hex}"
    hasher, received = hashlib.sha256(), 0
    try:
        with tmp.open("wb") as fh:
            async for data in chunks:
                received += len(data)
                if received > size:
                    raise ValidationError("data", f"more than the {size} bytes announced")
                hasher.update(data)
                await asyncio.to_thread(fh.write, data)
        if received != size:
            raise ValidationError("size", f"announced {size} bytes, {received} arrived")
        if sha256 and hasher.hexdigest() != sha256.lower():
            raise ValidationError("sha256", f"content hashes to {hasher.hexdigest()}")
        return await c.upload_dataset(name, filename, tmp)
    except DatasetError as exc:
        raise ValidationError("file", str(exc)) from None
    finally:
        await asyncio.to_thread(tmp.unlink, missing_ok=True)


async def remove_agent(c: Controller, fleet: Fleet, ref: str) -> AgentRecord:
    """Forget an agent (by name, id, id prefix or address): no longer supervised, its pin and its stored record
    gone. An agent still advertised on the LAN may be found again over mDNS."""
    record = await fleet.remove(ref)
    c.store.delete_agent(record.node_id)
    return record


@dataclass(frozen=True)
class ModelExport:
    record: dict[str, Any]
    format: str  # the file's format (the stored one unless a conversion was asked for)
    path: Path
    sha256: str
    size: int
    config: dict[str, Any]


@contextlib.asynccontextmanager
async def exported_model(c: Controller, ref: str, fmt: str = "") -> AsyncIterator[ModelExport]:
    """The model version `ref` as a file in `fmt` (converted on the fly if need be), checked against its hash;
    the scratch copy is removed when the download ends."""
    record = await c.registry.resolve(ref)
    incoming = c.blobs_dir / "incoming"
    await asyncio.to_thread(incoming.mkdir, parents=True, exist_ok=True)
    scratch = incoming / f"export-{uuid.uuid4().hex}"
    try:
        path = await c.registry.export(record, fmt, scratch)
        digest, size = await asyncio.to_thread(file_digest, path)
        yield ModelExport(record, fmt or str(record["format"]), path, digest, size, model_config(record))
    finally:
        await asyncio.to_thread(scratch.unlink, missing_ok=True)


async def metric_rows(c: Controller, job_id: str, names: set[str] | None = None) -> list[JobEventRecord]:
    """Every metric point the job has stored so far (of `names` only, when given), in order."""
    job = c.get(job_id)
    await c.store.flush()
    rows = await c.store.events(job.id, 0, ("metric",))
    return [r for r in rows if not names or r.name in names]


async def log_rows(c: Controller, job_id: str, task_index: int | None) -> list[JobEventRecord]:
    """The job's stored log lines: of one task, or of all (None)."""
    job = c.get(job_id)
    if task_index is not None and not 0 <= task_index < len(job.tasks):
        raise ValidationError("task_index", f"job {job.id} has tasks 0..{len(job.tasks) - 1}")
    await c.store.flush()
    return await c.store.events(job.id, 0, ("log",), task_index)


@dataclass(frozen=True)
class ModelPage:
    models: list[dict[str, Any]]
    page: int
    limit: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.limit))


def min_metric_floor(text: str) -> tuple[str, float] | None:
    """`NAME=NUMBER` (a registry filter: versions whose metric is at least NUMBER)."""
    if not text:
        return None
    metric, _, value = text.partition("=")
    try:
        return metric.strip(), float(value)
    except ValueError:
        raise ValidationError("min_metric", f"must be NAME=NUMBER, got {text[:80]!r}") from None


async def list_models(
    c: Controller,
    name: str = "",
    algorithm: str = "",
    tag: str = "",
    alias: str = "",
    min_metric: str = "",
    page: int = 1,
    limit: int = 20,
) -> ModelPage:
    """One page of model versions (newest first), each with the state of its stored file."""
    items, total = await c.registry.list(name, algorithm, tag, alias, min_metric_floor(min_metric), page, limit)
    return ModelPage(await c.registry.with_blob_status(items), page, limit, total)
