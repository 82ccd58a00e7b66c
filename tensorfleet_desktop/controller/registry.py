"""The model registry: named models with integer versions, aliases and tags, over the store and blob store.

A job that succeeds registers its model automatically. Every read of a model's bytes checks them against
the recorded sha256, so a damaged file is an error that names the version, never a half-loaded model.
Models are kept in safe formats (skops, safetensors + JSON config); pickle and joblib are only produced on
request for a download, from a skops file loaded against an allow-list of types.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tensorfleet_agent.core.digest import file_sha256
from tensorfleet_agent.workloads.registry import get_workload
from tensorfleet_agent.workloads.skops_files import load_sklearn
from tensorfleet_desktop.controller import principals
from tensorfleet_desktop.controller.model import ArtifactInfo, Job
from tensorfleet_desktop.controller.store.base import JobStore
from tensorfleet_desktop.controller.store.blobs import BlobStore

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
TAG = re.compile(r"^[^\s,]{1,64}$")
FORMATS = {"skops": ("skops", "pickle", "joblib", "onnx"), "safetensors": ("safetensors", "onnx")}
#: What a project's `task.register_model` may register (its "report" artifact names one); a project model is
#: stored as it was saved, and downloads in its own format only (a plain safetensors file has no config to
#: rebuild a module from).
PROJECT_FORMATS = ("skops", "safetensors", "onnx", "pickle")
_EXTENSIONS = {".skops": "skops", ".safetensors": "safetensors", ".onnx": "onnx", ".pkl": "pickle", ".pickle": "pickle"}


class RegistryError(ValueError):
    """A request the registry cannot honour; the message names the problem."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ModelNotFound(LookupError):
    pass


class BlobDamaged(Exception):
    """A registered version's file is missing or does not hash to its sha256: the store lost data, the
    request was fine."""


Records = list[dict[str, Any]]
MAX_VERSION = 2**63 - 1  # what both stores can hold
MISSING, DAMAGED = "MISSING", "DAMAGED"  # a version's blob status; "" when its file is there and hashes right


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """NAME (latest version), NAME:VERSION or NAME@ALIAS."""
    name, version, alias = ref, None, None
    if "@" in ref:
        name, alias = ref.split("@", 1)
        if not ALIAS.match(alias):
            raise RegistryError("ref", f"{ref!r}: an alias is letters, digits, '.', '_' or '-', starting with a letter")
    elif ":" in ref:
        name, number = ref.rsplit(":", 1)
        if not (number.isascii() and number.isdigit() and len(number) <= 19 and 1 <= int(number) <= MAX_VERSION):
            raise RegistryError("ref", f"{ref[:120]!r}: the version after ':' must be a positive integer (< 2**63)")
        version = int(number)
    if not NAME.match(name):
        raise RegistryError("ref", f"{ref!r} is not NAME, NAME:VERSION or NAME@ALIAS")
    return name, version, alias


def check_alias(alias: str) -> str:
    if not ALIAS.match(alias):
        raise RegistryError("alias", f"{alias!r}: letters, digits, '.', '_' or '-', starting with a letter")
    return alias


class Registry:
    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        refetch: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.refetch = refetch  # copies a version's blob again from the agent that made it, when it can
        self._checked: dict[str, tuple[int, int, bool]] = {}  # sha256 -> (size, mtime_ns, hashes right)

    # ---- registration

    async def register_job(
        self, job: Job, dataset_names: dict[str, str], trial: int | None = None
    ) -> dict[str, Any] | None:
        """Register a succeeded job's model; None when the job has no single model (cv folds, diagnostics).
        `trial`: a sweep's trial other than its best (keep_models all), with that trial's own metrics."""
        model, config, report = pick_artifacts(job, trial)
        if model is None:
            return None
        described = (
            json.loads(await asyncio.to_thread((await self.blobs.ensure(report.sha256)).read_text)) if report else {}
        )
        configured = (
            json.loads(await asyncio.to_thread((await self.blobs.ensure(config.sha256)).read_text)) if config else {}
        )
        if configured:
            from tensorfleet_agent.workloads.torch_models import upgrade

            configured = upgrade(configured)
            described = {
                **described,
                "features": configured["input"]["features"],
                "classes": configured["output"]["classes"],
            }
        spec = job.spec
        dataset = str(spec.get("dataset", ""))
        user_sha = dataset.split(":", 1)[1] if dataset.startswith("user:") else ""
        dataset_name = dataset_names.get(user_sha, user_sha[:12]) if user_sha else dataset
        pinned = spec.get("dataset_version")  # a dataset version: the model keeps naming it after its job is gone
        version: dict[str, Any] = {}
        if isinstance(pinned, dict):
            dataset_name = str(pinned.get("name") or dataset_name)
            version = {"version": pinned.get("version"), "content_id": pinned.get("content_id", "")}
        chosen = _chosen_task(job, model)
        params = dict(chosen.params) if chosen is not None and chosen.params else dict(spec.get("hyperparameters", {}))
        name = str(spec.get("model_name") or "") or _default_name(str(spec["algorithm"]), dataset_name)
        fmt = "safetensors" if model.name.endswith(".safetensors") else "skops"
        if spec.get("project"):  # named by the user's code (task.register_model), stored as it saved it
            named = str(described.get("sha256") or "")  # the report names the file it describes
            model = next((a for a in reversed(job.artifacts) if a.kind == "model" and a.sha256 == named), model)
            chosen_name = _project_model(job, model, described, name)
            if chosen_name is None:
                return None
            name, fmt = chosen_name
        scores = job.metrics if trial is None or chosen is None else {**chosen.metrics, "trial": float(trial)}
        metrics = {k: v for k, v in scores.items() if isinstance(v, int | float) and math.isfinite(v)}
        record = {
            "name": name,
            "algorithm": str(spec["algorithm"]),
            "hyperparameters": params,
            "metrics": metrics,
            "dataset": {
                "name": dataset_name,
                # an upload: its file's; a built-in dataset: its data's, as the task hashed it (data_sha256)
                "sha256": user_sha or str(described.get("data_sha256") or configured.get("data_sha256") or ""),
                "split_seed": described.get("split_seed", 42),
                "params": {k: v for k, v in (spec.get("dataset_params") or {}).items() if k != "file"},
                **version,
            },
            "job_id": job.id,
            "owner": principals.user_of(job.submitter),  # the first version's owner owns the name (owner_of)
            "task_ids": [
                t.agent_task_id or t.bundle  # a trial that rode in a bundle: the bundle's agent task
                for t in job.tasks
                if (t.agent_task_id or t.bundle) and (job.mode != "sweep" or chosen is None or t is chosen)
            ],
            "feature_names": described.get("features") or configured.get("features") or [],
            "classes": described.get("classes") or configured.get("classes") or [],
            "framework_versions": described.get("versions") or configured.get("versions") or {},
            "format": fmt,
            "size": model.size,
            "sha256": model.sha256,
            "config": configured,
            "tags": [],
            "description": "",
            "created_at": time.time(),
        }
        stored = await self.store.register_model(record)
        log.info("job %s registered as %s:%d", job.id, stored["name"], stored["version"])
        return stored

    # ---- queries

    async def resolve(self, ref: str) -> dict[str, Any]:
        name, version, alias = parse_ref(ref)
        if version is not None:
            found = await self.store.get_model(name, version)
        else:
            versions = await self.store.model_versions(name)
            if alias is not None:
                found = next((v for v in versions if alias in v["aliases"]), None)
            else:
                found = max(versions, key=lambda v: v["version"], default=None)
        if found is None:
            raise ModelNotFound(f"no model {ref!r}" + (" (no such alias)" if alias else ""))
        return found

    async def list(
        self,
        name: str = "",
        algorithm: str = "",
        tag: str = "",
        alias: str = "",
        min_metric: tuple[str, float] | None = None,
        page: int = 1,
        limit: int = 20,
    ) -> tuple[list[dict[str, Any]], int]:
        if page < 1 or not 1 <= limit <= 1000:
            raise RegistryError("page" if page < 1 else "limit", "page >= 1 and 1 <= limit <= 1000")
        items = await self.store.model_versions(name, algorithm)
        if tag:
            items = [v for v in items if tag in v.get("tags", [])]
        if alias:
            items = [v for v in items if alias in v["aliases"]]
        if min_metric is not None:
            metric, floor = min_metric
            items = [v for v in items if v["metrics"].get(metric, -math.inf) >= floor]
        return items[(page - 1) * limit : page * limit], len(items)

    async def stats(self, recent: int = 5) -> dict[str, Any]:
        items = await self.store.model_versions()
        by_algorithm: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            by_algorithm.setdefault(item["algorithm"], []).append(item)
        rows = []
        for algorithm, versions in sorted(by_algorithm.items()):
            scores = [v["metrics"]["test_accuracy"] for v in versions if "test_accuracy" in v["metrics"]]
            rows.append(
                {
                    "algorithm": algorithm,
                    "count": len(versions),
                    "avg_accuracy": sum(scores) / len(scores) if scores else None,
                    "best_accuracy": max(scores) if scores else None,
                }
            )
        return {"total_models": len(items), "algorithm_stats": rows, "recent_models": items[:recent]}

    # ---- changes

    async def owner_of(self, name: str) -> str:
        """Who a model name belongs to: the submitter of the job that registered its oldest version ("" for a name
        registered before owners: everyone's to change)."""
        versions = await self.store.model_versions(name)
        first = min(versions, key=lambda v: int(v["version"]), default=None)
        return str(first.get("owner") or "") if first is not None else ""

    async def _may_change(self, name: str, verb: str) -> None:
        """Only a model's owner or an admin moves its aliases (what `@production` serves) or edits its tags and
        descriptions; everyone may read, download and build on it."""
        principals.allow_owns(principals.current(), f"model {name}", await self.owner_of(name), verb)

    async def set_alias(self, ref: str, alias: str) -> dict[str, Any]:
        record = await self.resolve(ref)
        await self._may_change(record["name"], "move its aliases")
        await self.store.set_alias(record["name"], check_alias(alias), record["version"])
        return await self.resolve(f"{record['name']}:{record['version']}")

    async def remove_alias(self, name: str, alias: str) -> dict[str, Any]:
        """Drop name@alias; returns the version it pointed at."""
        record = await self.resolve(f"{parse_ref(name)[0]}@{check_alias(alias)}")
        await self._may_change(record["name"], "remove its aliases")
        await self.store.remove_alias(record["name"], alias)
        return {**record, "aliases": [a for a in record["aliases"] if a != alias]}

    async def tag(self, ref: str, tag: str) -> dict[str, Any]:
        if not TAG.match(tag):
            raise RegistryError("tag", f"{tag!r}: 1 to 64 characters without spaces or commas")
        record = await self.resolve(ref)
        await self._may_change(record["name"], "tag it")
        tags = sorted({*record.get("tags", []), tag})
        await self.store.update_model(record["name"], record["version"], {"tags": tags})
        return {**record, "tags": tags}

    async def describe(self, ref: str, description: str) -> dict[str, Any]:
        if len(description) > 4096:
            raise RegistryError("description", f"is {len(description)} characters long; at most 4096")
        record = await self.resolve(ref)
        await self._may_change(record["name"], "describe it")
        await self.store.update_model(record["name"], record["version"], {"description": description})
        return {**record, "description": description}

    async def delete(self, ref: str, force: bool) -> dict[str, Any]:
        name, version, _alias = parse_ref(ref)
        if version is None:
            raise RegistryError("ref", f"{ref!r}: name the version to delete, as NAME:VERSION")
        record = await self.resolve(ref)
        if record["aliases"] and not force:
            raise RegistryError(
                "ref", f"{ref} is {', '.join('@' + a for a in record['aliases'])}; move the alias or use --force"
            )
        await self.store.delete_model(name, version)
        return record

    # ---- bytes

    async def verified(self, record: dict[str, Any]) -> Path:
        """The model's blob, after checking it still hashes to the recorded sha256; a missing or damaged one is
        copied again from the agent of the job that made it when that agent is connected and has it."""
        where = f"{record['name']}:{record['version']}"
        problem = await self._check(record)
        if problem and self.refetch is not None:
            await self.refetch(record)
            problem = await self._check(record)
        if problem:
            raise BlobDamaged(f"{where}: {problem}")
        return self.blobs.path(record["sha256"])

    async def _check(self, record: dict[str, Any]) -> str:
        """What is wrong with a version's blob ("" when nothing)."""
        try:
            path = await self.blobs.ensure(record["sha256"])
            digest = await asyncio.to_thread(file_sha256, path)
        except FileNotFoundError:
            return f"its file {record['sha256'][:12]} is missing from the blob store"
        if digest != record["sha256"]:
            return f"stored bytes hash to {digest[:12]}, not {record['sha256'][:12]}: the file is damaged"
        return ""

    async def with_blob_status(self, records: Records) -> Records:
        """The records with "blob": MISSING, DAMAGED or "" (a file is hashed once, then again only when its
        size or modification time changes)."""
        return [{**r, "blob": await asyncio.to_thread(self._blob_status, r["sha256"])} for r in records]

    def _blob_status(self, sha256: str) -> str:
        path = self.blobs.path(sha256)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return "" if self.blobs.remote else MISSING  # an object store's blob is fetched on first use
        seen = self._checked.get(sha256)
        if seen is None or seen[:2] != (stat.st_size, stat.st_mtime_ns):
            seen = (stat.st_size, stat.st_mtime_ns, file_sha256(path) == sha256)
            self._checked[sha256] = seen
        return "" if seen[2] else DAMAGED

    async def export(self, record: dict[str, Any], fmt: str, out: Path) -> Path:
        """Write the model in `fmt` to `out` (the stored file itself for its own format)."""
        fmt = fmt or record["format"]
        allowed = FORMATS.get(record["format"], (record["format"],))
        if record["format"] == "safetensors" and not record.get("config"):
            allowed = ("safetensors",)  # a project's own tensors: no config to rebuild a module from for ONNX
        if fmt not in allowed:
            raise RegistryError(
                "format", f"{record['name']} is a {record['format']} model; it downloads as {', '.join(allowed)}"
            )
        source = await self.verified(record)
        if fmt == record["format"]:
            return source
        await asyncio.to_thread(_convert, record, source, fmt, out)
        return out


def _convert(record: dict[str, Any], source: Path, fmt: str, out: Path) -> None:
    """skops -> pickle/joblib/onnx, safetensors -> onnx (blocking)."""
    if record["format"] == "skops":
        model = load_sklearn(source)
        if fmt == "pickle":
            import pickle

            out.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        elif fmt == "joblib":
            import joblib

            joblib.dump(model, out)
        else:
            try:
                from skl2onnx import to_onnx
            except ImportError:
                raise RegistryError(
                    "format", "ONNX export needs skl2onnx on the controller: pip install skl2onnx"
                ) from None
            import numpy as np

            sample = np.zeros((1, len(record["feature_names"]) or 1), dtype=np.float32)
            out.write_bytes(to_onnx(model, sample).SerializeToString())
        return
    try:
        import onnx  # noqa: F401  (torch.onnx needs it)
        import torch

        from tensorfleet_agent.workloads.torch_models import rebuild
    except ImportError:
        raise RegistryError("format", "ONNX export needs torch and onnx on the controller: pip install onnx") from None
    import importlib.util
    import warnings

    module = rebuild(record["config"], source)  # raw features in: the graph standardises them itself
    shape = model_config(record)["input"]["shape"][1:]  # [features], or an image's [channels, height, width]
    example = torch.zeros((2, *shape), dtype=torch.float32)  # not 1: an exporter may fix a size-1 axis
    new_exporter = importlib.util.find_spec("onnxscript") is not None  # else the TorchScript one, still shipped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            str(out),
            input_names=["features"],
            output_names=["logits"],
            dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}},  # any number of rows per call
            dynamo=new_exporter,
        )


def model_config(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON that goes with a downloaded model: a torch model's config in the current format (older
    versions recorded one that named no layers); {} for models that need none."""
    config = record.get("config") or {}
    if not config or record.get("format") != "safetensors":
        return dict(config)
    from tensorfleet_agent.workloads.torch_models import upgrade

    return upgrade(config)


def _default_name(algorithm: str, dataset: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{algorithm}-{dataset}").strip("-.")[:128]
    return name if NAME.match(name) else algorithm


def _project_model(job: Job, model: ArtifactInfo, report: dict[str, Any], fallback: str) -> tuple[str, str] | None:
    """(name, format) of a project's registered model: the report's (task.register_model's name and format),
    else the job's model_name or its name, and the format the file's extension says. None (not registered, the
    job still succeeds: its file stays an artifact) for a format the registry does not keep."""
    name = str(report.get("model_name") or "")
    if name and not NAME.match(name):
        log.warning("job %s: model name %r is not a registry name; using %s", job.id, name[:80], fallback)
        name = ""
    if not name:
        name = str(job.spec.get("model_name") or "") or _default_name(job.name, "") or fallback
    fmt = str(report.get("format") or "") or _EXTENSIONS.get(Path(model.name).suffix.lower(), "")
    if fmt not in PROJECT_FORMATS:
        log.warning(
            "job %s: %s is %s, not one of %s: not registered (it stays an artifact of the job)",
            job.id,
            model.name,
            repr(fmt) if fmt else "of an unknown format",
            ", ".join(PROJECT_FORMATS),
        )
        return None
    return name, fmt


def _chosen_task(job: Job, model: ArtifactInfo) -> Any:
    return next((t for t in job.tasks if t.index == model.task_index), None)


def pick_artifacts(
    job: Job, trial: int | None = None
) -> tuple[ArtifactInfo | None, ArtifactInfo | None, ArtifactInfo | None]:
    """(model, torch config, scikit-learn report) of the job's one model (a sweep's best trial's, or `trial`'s),
    or (None, None, None)."""
    if job.mode == "cv" or get_workload(str(job.spec["algorithm"])).category == "diagnostic":
        return None, None, None
    if job.mode == "shards":
        index = -1
    elif job.mode == "sweep":
        index = int(job.metrics.get("best_trial", -2)) if trial is None else trial
    else:
        index = 0
    models = [a for a in job.artifacts if a.kind == "model" and a.task_index == index]
    if job.spec.get("project"):  # task.register_model saved the file (any name) and a report naming it
        report = next((a for a in reversed(job.artifacts) if a.kind == "report" and a.task_index == index), None)
        return (models[-1], None, report) if models else (None, None, None)
    models = [m for m in models if m.name.endswith((".skops", ".safetensors"))]
    if not models:
        return None, None, None
    lookup = 0 if index == -1 else index  # a merged forest is described by its first shard's report
    config = next((a for a in job.artifacts if a.kind == "model_config" and a.task_index == lookup), None)
    report = next((a for a in job.artifacts if a.kind == "report" and a.task_index == lookup), None)
    return models[-1], config, report


__all__ = [
    "BlobDamaged",
    "ModelNotFound",
    "Registry",
    "RegistryError",
    "model_config",
    "parse_ref",
    "pick_artifacts",
]
