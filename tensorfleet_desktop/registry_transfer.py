"""`tensorfleet registry export DIR` / `import DIR`: move the registry between backends, or back it up.

Works on the store and blob store directly (no controller needs to run), so a user can go from the
embedded default to MongoDB + S3: export with the old URIs, import with the new ones. The directory
holds registry.json (every version with its aliases, tags and lineage, and every dataset entry) and
blobs/<sha256> for each model and dataset file. Imports keep version numbers, verify every file's
sha256 and skip versions that already exist, so running one twice is harmless.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

from tensorfleet_agent.core.digest import file_sha256
from tensorfleet_desktop.controller.store import open_store
from tensorfleet_desktop.controller.store.blobs import BlobStore, open_blobs

FORMAT = 1


class TransferError(ValueError):
    pass


async def export_registry(store_uri: str, blobs_uri: str, data_dir: Path, out: Path) -> dict[str, int]:
    store, blobs = open_store(store_uri), open_blobs(blobs_uri, data_dir)
    await blobs.open()
    await store.open()
    try:
        versions = await store.model_versions()
        datasets = list((await store.load_datasets()).values())
        (out / "blobs").mkdir(parents=True, exist_ok=True)
        copied = 0
        for sha in sorted({v["sha256"] for v in versions} | {d["sha256"] for d in datasets}):
            source = await blobs.ensure(sha)
            target = out / "blobs" / sha
            if not target.exists():
                await asyncio.to_thread(shutil.copyfile, source, target)
                copied += 1
        manifest = {"format": FORMAT, "exported_at": time.time(), "models": versions, "datasets": datasets}
        (out / "registry.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        return {"versions": len(versions), "datasets": len(datasets), "files": copied}
    finally:
        await store.close()


async def import_registry(store_uri: str, blobs_uri: str, data_dir: Path, source: Path) -> dict[str, int]:
    manifest_path = source / "registry.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise TransferError(f"{manifest_path} is not a registry export: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise TransferError(f"{manifest_path} has format {manifest.get('format')!r}; this TensorFleet reads {FORMAT}")
    store, blobs = open_store(store_uri), open_blobs(blobs_uri, data_dir)
    await blobs.open()
    await store.open()
    try:
        shas = {v["sha256"] for v in manifest["models"]} | {d["sha256"] for d in manifest["datasets"]}
        for sha in sorted(shas):
            await _import_blob(blobs, source / "blobs" / sha, sha)
        known = await store.load_datasets()
        added_datasets = 0
        for entry in manifest["datasets"]:
            if entry["name"] not in known:
                store.save_dataset(entry["name"], entry)
                added_datasets += 1
        added = 0
        for record in sorted(manifest["models"], key=lambda r: (r["name"], r["version"])):
            if await store.put_model_version(record):
                added += 1
            for alias in record.get("aliases", []):
                await store.set_alias(record["name"], alias, int(record["version"]))
        await store.flush()
        return {"versions": added, "skipped": len(manifest["models"]) - added, "datasets": added_datasets}
    finally:
        await store.close()


async def _import_blob(blobs: BlobStore, path: Path, sha: str) -> None:
    await asyncio.to_thread(_check_and_copy, path, blobs.path(sha), sha)
    await blobs.publish(sha)


def _check_and_copy(path: Path, target: Path, sha: str) -> None:
    if not path.exists():
        raise TransferError(f"the export lacks {path.name}; nothing was imported past this point")
    if file_sha256(path) != sha:
        raise TransferError(f"{path} does not hash to its name: the export is damaged")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{sha}.import")
        shutil.copyfile(path, tmp)
        tmp.replace(target)


__all__ = ["TransferError", "export_registry", "import_registry"]
