"""The named datasets users uploaded: adopting an upload into the blob store, naming one in a job spec,
previewing and deleting them (never while a job or a registered model refers to one)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tensorfleet_agent.core.digest import blob_relpath, file_sha256
from tensorfleet_desktop.controller.datasets import (
    DatasetError,
    check_features,
    head_rows,
    infer_task,
    inspect,
    prepare_upload,
)
from tensorfleet_desktop.controller.errors import JobError, NotFoundError
from tensorfleet_desktop.controller.jobspec import JobSpecError, default_name, spec_algorithm
from tensorfleet_desktop.controller.model import Job
from tensorfleet_desktop.controller.store.base import JobStore
from tensorfleet_desktop.controller.store.blobs import BlobStore


class DatasetCatalog:
    def __init__(self, store: JobStore, blobs: BlobStore) -> None:
        self.store = store
        self.blobs = blobs
        self.entries: dict[str, dict[str, Any]] = {}  # name -> entry; the Controller's `datasets`

    async def load(self) -> None:
        self.entries.clear()
        self.entries.update(await self.store.load_datasets())

    def resolve(self, body: dict[str, Any]) -> dict[str, Any]:
        """An uploaded dataset named in a spec becomes user:<sha256> with its target column and task."""
        name = body.get("dataset")
        entry = self.entries.get(name) if isinstance(name, str) else None
        if entry is None and isinstance(name, str) and len(name) >= 8:
            hits = [d for d in self.entries.values() if d["sha256"].startswith(name)]
            entry = hits[0] if len(hits) == 1 else None
        if entry is None:
            return body
        target = body.get("target")
        if not isinstance(target, str) or not target:
            raise JobSpecError("target", f"name the target column of {entry['name']} ({', '.join(entry['columns'])})")
        if target not in entry["columns"]:
            raise JobSpecError(
                "target", f"{target!r} is not a column of {entry['name']} (columns: {', '.join(entry['columns'])})"
            )
        profile = entry.get("profile")
        if profile is None:  # stored before uploads were profiled
            profile = inspect(self.blobs.path(entry["sha256"]), entry["filename"])[3]
            entry["profile"] = profile
        try:
            check_features(entry["columns"], profile, target)
        except DatasetError as exc:
            raise JobSpecError("dataset", f"{entry['name']}: {exc}") from None
        task = infer_task(profile[target])
        rest = {k: v for k, v in body.items() if k != "target"}
        if not rest.get("name"):  # named after the dataset, not the user:<sha256> it becomes
            rest["name"] = default_name(spec_algorithm(body), entry["name"])
        return {
            **rest,
            "dataset": f"user:{entry['sha256']}",
            "dataset_params": {"target": target, "file": entry["filename"], "task": task},
        }

    async def upload(self, name: str, filename: str, tmp: Path) -> dict[str, Any]:
        """Adopt an uploaded file as a named dataset (Parquet is stored as its CSV form)."""
        tmp, filename, source, (fmt, rows, columns, profile) = await asyncio.to_thread(prepare_upload, tmp, filename)
        digest, size = await asyncio.to_thread(self._adopt_blob, tmp)
        await self.blobs.publish(digest)
        entry = {
            "name": name,
            "sha256": digest,
            "filename": filename,
            "format": "parquet" if source else fmt,
            "rows": rows,
            "columns": columns,
            "size": size,
            "created_at": time.time(),
            "profile": profile,
            "source": source,
        }
        self.entries[name] = entry
        self.store.save_dataset(name, entry)
        return entry

    def get(self, name: str) -> dict[str, Any]:
        entry = self.entries.get(name)
        if entry is None:
            known = ", ".join(sorted(self.entries)) or "none uploaded yet"
            raise NotFoundError(f"no dataset {name!r} (datasets: {known})")
        return entry

    async def preview(self, name: str, rows: int) -> tuple[dict[str, Any], list[str], list[list[str]]]:
        entry = self.get(name)
        path = await self.blobs.ensure(entry["sha256"])
        header, body = await asyncio.to_thread(head_rows, path, rows)
        return entry, header, body

    async def delete(self, name: str, jobs: Iterable[Job]) -> dict[str, Any]:
        """Forget a dataset; refused while a job or a registered model refers to it. Its file goes when unused."""
        entry = self.get(name)
        ref = f"user:{entry['sha256']}"
        users = [j.id for j in jobs if j.spec.get("dataset") == ref]
        if users:
            raise JobError(f"dataset {name} is used by job(s) {', '.join(users[:5])}; delete or keep it")
        models = [m for m in await self.store.model_versions() if m.get("dataset", {}).get("sha256") == entry["sha256"]]
        if models:
            refs = ", ".join(f"{m['name']}:{m['version']}" for m in models[:5])
            raise JobError(f"dataset {name} is the training data of model(s) {refs}")
        del self.entries[name]
        self.store.delete_dataset(name)
        if not any(d["sha256"] == entry["sha256"] for d in self.entries.values()):
            await self.blobs.delete(entry["sha256"])
        return entry

    def _adopt_blob(self, tmp: Path) -> tuple[str, int]:
        """Move a finished file into the blob store under its sha256 (blocking)."""
        digest = file_sha256(tmp)
        final = self.blobs.root / blob_relpath(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(final)
        return digest, final.stat().st_size
