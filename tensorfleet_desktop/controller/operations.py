"""What the controller's faces (gRPC in service.py, HTTP in http/) do with a request beyond a single core call:
parsing a JSON object a client sent, receiving a dataset upload, exporting a model for download, reading a job's
metrics and logs, listing models by page. Both faces call these, so the limits and the messages are the same
whichever a client speaks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
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
from tensorfleet_desktop.controller.errors import AgentBusy, AgentCallError
from tensorfleet_desktop.controller.model import JobEventRecord
from tensorfleet_desktop.controller.registry import model_config

if TYPE_CHECKING:  # the fleet speaks gRPC: the core imports it for type checks only
    from tensorfleet_desktop.controller.fleet import AgentRecord, Fleet

MAX_DATASET_BYTES = 8 << 30
MAX_JSON_DEPTH = 32  # nesting of a JSON object a client sends (a job spec is 3 or 4 levels deep)
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

#: Every byte but the JSON structure the depth check needs: quotes and brackets.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')


class JsonSyntaxError(ValidationError):
    """The text is not JSON at all (not UTF-8, or not parseable): HTTP answers it 400, as any body that is not
    JSON; the rest of the faces treat it as the ValidationError it is."""


def _nested_deeper(text: str, depth: int) -> bool:
    """Whether the JSON text nests arrays and objects more than `depth` levels, found without parsing (nor
    recursing): escaped backslashes and quotes dropped, then everything but quotes and brackets, then the strings,
    then innermost bracket pairs one level per pass. (Text that is not JSON gets an answer too; the parser then
    refuses it, or, when it is deeper than `depth`, the caller does.)"""
    if text.count("[") + text.count("{") <= depth:
        return False
    shape = text.replace("\\\\", "").replace('\\"', "").encode("utf-8", "surrogatepass").translate(None, _NOT_STRUCTURE)
    if b'"' in shape:
        shape = b"".join(shape.split(b'"')[::2])  # outside the strings
    for _ in range(depth):
        if not shape:
            return False
        shape = shape.replace(b"[]", b"").replace(b"{}", b"")
    return bool(shape)


def parse_json_object(data: bytes | str, field: str, limit: int, depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """A JSON object a client sent as `field` (a job spec, resubmit parameters): at most `limit` bytes, UTF-8,
    nested at most `depth` levels (checked before it is parsed, so no text can exhaust the parser's recursion or
    reach the core as a structure too deep to walk), valid JSON, an object. Empty text is `{}`. Refusals are
    ValidationErrors naming `field` (JsonSyntaxError for text that is not JSON)."""
    size = len(data) if isinstance(data, bytes) or len(data) > limit else len(data.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise ValidationError(field, f"is larger than {limit} bytes")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonSyntaxError(field, f"is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = data
    if not text.strip():
        return {}
    if _nested_deeper(text, depth):
        raise ValidationError(field, f"nests arrays or objects more than {depth} levels deep")
    try:
        value = json.loads(text)
    except RecursionError:  # not reached after the depth check; kept as a guard
        raise ValidationError(field, f"nests arrays or objects more than {depth} levels deep") from None
    except ValueError as exc:
        raise JsonSyntaxError(field, f"is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValidationError(field, f"must be a JSON object, got {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _write_hashed(fh: Any, hasher: Any, data: bytes) -> None:
    hasher.update(data)
    fh.write(data)


async def receive_dataset(
    c: Controller, name: str, filename: str, size: int, sha256: str, chunks: AsyncIterator[bytes]
) -> dict[str, Any]:
    """Store an upload of `size` bytes under `name`: written to a scratch file as it arrives, checked (size,
    sha256 when given, parseable), then adopted; a failed upload leaves nothing behind."""
    check_id(name, "name")
    if not filename or "/" in filename or "\\" in filename or len(filename) > 200:
        raise ValidationError("filename", f"must be a plain file name, got {filename[:80]!r}")
    if CONTROL_CHARACTERS.search(filename):
        raise ValidationError("filename", f"must not hold control characters, got {filename[:80]!r}")
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
                await asyncio.to_thread(_write_hashed, fh, hasher, data)  # hashed off the loop too
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


async def agent_cache(c: Controller, fleet: Fleet, record: AgentRecord) -> dict[str, Any]:
    """An agent's blob cache and dataset trees (gRPC GetAgentCache, GET /agents/{id}/cache). What it holds now
    also corrects the holders index (the versions it no longer has are not offered as peer sources)."""
    from tensorfleet_desktop.controller.agent_link import FleetAgents  # the fleet's gRPC side: at the edge

    try:
        cache = await FleetAgents(fleet).list_cache(record.node_id)
    except AgentBusy as exc:
        state = record.public_state()
        raise AgentCallError(
            f"agent {record.name} ({record.node_id[:12]}) cannot list its blob cache now: it is not connected"
            f"{f' ({state})' if state else ''} ({exc})"
        ) from None
    except AgentCallError as exc:
        raise AgentCallError(
            f"agent {record.name} ({record.node_id[:12]}) could not list its blob cache: {exc}"
        ) from None
    c.attempts.holders.cache_listed(record.node_id, [str(t["content_id"]) for t in cache["trees"]])
    return cache


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


REGISTRY_PAGE = 1000  # the most versions registry.list hands out at once


async def matching_models(
    c: Controller, name: str = "", algorithm: str = "", tag: str = "", alias: str = "", min_metric: str = ""
) -> list[dict[str, Any]]:
    """Every model version the filters match, newest first: through the registry call list_models (gRPC
    ListModels) makes, so the filters are the same, read REGISTRY_PAGE at a time (once, below that many). For a
    face that pages by key (HTTP's cursor); its blob status is for the caller to add to the page it shows."""
    floor = min_metric_floor(min_metric)
    found: dict[tuple[str, int], dict[str, Any]] = {}
    number, total = 0, 1
    while len(found) < total and number * REGISTRY_PAGE < total:
        number += 1
        items, total = await c.registry.list(name, algorithm, tag, alias, floor, number, REGISTRY_PAGE)
        for item in items:  # a version registered between two reads shifts the next one: kept once
            found.setdefault((str(item["name"]), int(item["version"])), item)
    return list(found.values())
