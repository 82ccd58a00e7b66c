"""The named datasets and their versions (issue 20): committing an uploaded tree (a manifest whose files and chunks
are in the blob store) or snapshotting a reference (s3:// or file://) as version N+1 (none when equal to the
latest), naming NAME[:VERSION] in a job spec, paging a version's tree, and deleting a version or a dataset (never
while a job or a registered model refers to it). The pure rules are in dataset_versions.py, the listings of
references in dataset_refs.py, table profiling in datasets.py.

A version that is one CSV or Parquet file is also a table, profiled at commit exactly as single-file uploads
always were, so `--dataset NAME --target COL` jobs keep working; a dataset stored before versions loads as its
version 1 (and is stored as such from then on).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tensorfleet_agent.core.digest import file_sha256
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import (
    CHUNK_BYTES,
    MAX_MANIFEST_BYTES,
    ManifestEntry,
    manifest_bytes,
    manifest_from_bytes,
)
from tensorfleet_agent.workloads.datasets import BUILTIN, IMAGES
from tensorfleet_agent.workloads.registry import get_workload
from tensorfleet_desktop.controller import dataset_refs, principals
from tensorfleet_desktop.controller.dataset_versions import (
    MAX_LISTING_BYTES,
    check_name,
    legacy_table,
    listing_bytes,
    listing_files,
    listing_from_bytes,
    listing_id,
    manifest_files,
    parse_ref,
    ref_text,
    single_file_manifest,
    table_candidate,
    table_entry,
)
from tensorfleet_desktop.controller.datasets import (
    MAX_TABLE_BYTES,
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
from tensorfleet_desktop.controller.project_files import ProjectFiles, check_sha256
from tensorfleet_desktop.controller.store.base import JobStore, redact_uri
from tensorfleet_desktop.controller.store.blobs import BlobStore

log = logging.getLogger(__name__)
_NAMED = 5  # missing files or users named in a refusal
_TREES_KEPT = 8  # parsed manifests/listings remembered (a paged `datasets show` reads the same one)
BUILTIN_NAMES = {d.name for d in BUILTIN}
READ_DEFAULT = 1 << 20  # ReadDatasetFile's bytes when the request names no limit
READ_MAX = 4 << 20  # under gRPC's 8 MiB message cap; within a chunk: a preview never assembles a file


class DatasetCatalog:
    def __init__(self, store: JobStore, blobs: BlobStore) -> None:
        self.store = store
        self.blobs = blobs
        self.files = ProjectFiles(blobs)
        self.versions: dict[str, list[dict[str, Any]]] = {}  # name -> version records, oldest first
        # name -> the latest version's table entry ({"name", "sha256": ""} when it is no table): the Controller's
        # `datasets`, which the registry (names of uploads by sha256) and retention read
        self.entries: dict[str, dict[str, Any]] = {}
        self._trees: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    # ---- loading

    async def load(self) -> None:
        self.versions.clear()
        self.entries.clear()
        for record in await self.store.load_dataset_versions():
            self.versions.setdefault(record["name"], []).append(record)
        for name, entry in (await self.store.load_datasets()).items():
            if name in self.versions:  # migrated already; the old row's delete was lost
                self.store.delete_dataset(name)
                continue
            record = await self._legacy_version(name, entry)
            self.versions[name] = [record]
            self.store.save_dataset_version(name, 1, record)
            self.store.delete_dataset(name)
            log.info("dataset %s: stored before versions, now its version 1", name)
        for name, records in self.versions.items():
            records.sort(key=lambda r: int(r["version"]))
            self._refresh(name)

    async def _legacy_version(self, name: str, entry: dict[str, Any]) -> dict[str, Any]:
        """A single-file dataset of before versions as its version 1: one file, a table."""
        manifest = single_file_manifest(entry["filename"], entry["sha256"], int(entry["size"]))
        content_id = await self._put_blob(manifest_bytes(manifest))
        return {
            "name": name,
            "version": 1,
            "source": "upload",
            "url": "",
            "content_id": content_id,
            "files": 1,
            "bytes": int(entry["size"]),
            "created_at": float(entry.get("created_at") or time.time()),
            "created_by": "",
            "table": legacy_table(entry),
            "table_error": "",
        }

    def _refresh(self, name: str) -> None:
        records = self.versions.get(name)
        if not records:
            self.versions.pop(name, None)
            self.entries.pop(name, None)
            return
        latest = records[-1]
        self.entries[name] = table_entry(name, latest) or {"name": name, "sha256": "", "version": latest["version"]}

    # ---- lookups

    def dataset(self, name: str) -> list[dict[str, Any]]:
        records = self.versions.get(name)
        if not records:
            known = ", ".join(sorted(self.versions)) or "none uploaded yet"
            raise NotFoundError(f"no dataset {name!r} (datasets: {known})")
        return records

    def info(self, name: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """(the latest version's table entry or None, the versions oldest first): what DatasetInfo carries."""
        records = self.dataset(name)
        return table_entry(name, records[-1]), records

    @staticmethod
    def builtin_names() -> list[str]:
        return [d.name for d in BUILTIN]

    def version(self, ref: str) -> dict[str, Any]:
        """The version NAME:VERSION names, or NAME's latest."""
        name, number = parse_ref(ref)
        records = self.dataset(name)
        if number is None:
            return records[-1]
        for record in records:
            if record["version"] == number:
                return record
        have = ", ".join(str(r["version"]) for r in records)
        raise NotFoundError(f"dataset {name} has no version {number} (versions: {have})")

    def table(self, ref: str) -> dict[str, Any]:
        """The table of NAME[:VERSION] as a single-file dataset entry; refused when that version is no table."""
        record = self.version(ref)
        entry = table_entry(record["name"], record)
        if entry is None:
            raise ValidationError("dataset", _not_a_table(record))
        return entry

    def get(self, name: str) -> dict[str, Any]:
        """The latest version's table (what the single-file API of before answers)."""
        return self.table(name)

    def owner(self, name: str) -> str:
        """Who a dataset name belongs to: whoever made its oldest version ("" for none yet, or one stored before
        owners: everyone's to add to)."""
        records = self.versions.get(name)
        return str(records[0].get("created_by") or "") if records else ""

    def _may_add(self, name: str) -> None:
        """Only the dataset's owner or an admin adds versions to it: a colleague's `--dataset NAME` resolves to the
        latest version, so another user's version would change what their next job trains on."""
        principals.allow_owns(principals.current(), f"dataset {name}", self.owner(name), "add versions to it")

    async def tree(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """A version's files sorted by path ({"path", "size", "sha256", "etag", "chunks"})."""
        key = record["content_id"]
        known = self._trees.get(key)
        if known is None:
            if record["source"] == "upload":
                known = manifest_files(await self.manifest(key))
            else:
                known = listing_files((await self.listing(key))[1])
            self._trees[key] = known
            while len(self._trees) > _TREES_KEPT:
                self._trees.popitem(last=False)
        self._trees.move_to_end(key)
        return known

    async def manifest(self, content_id: str) -> tuple[ManifestEntry, ...]:
        """A version's manifest, checked (its bytes hash to its id, it parses)."""
        data = await self._read_blob(content_id, MAX_MANIFEST_BYTES, "manifest_id")
        try:
            return await asyncio.to_thread(manifest_from_bytes, data)
        except ValidationError as exc:
            raise ValidationError("manifest_id", f"blob {content_id[:12]} is not a dataset manifest: {exc}") from None

    async def listing(self, content_id: str) -> tuple[str, list[dict[str, Any]]]:
        """A reference version's snapshot: (url, objects [{"path", "size", "etag"}] sorted by path)."""
        data = await self._read_blob(content_id, MAX_LISTING_BYTES, "listing")
        return listing_from_bytes(data)

    async def _read_blob(self, sha256: str, limit: int, field: str) -> bytes:
        check_sha256(sha256, field)
        try:
            path = await self.blobs.ensure(sha256)
        except FileNotFoundError:
            raise ValidationError(
                field, f"the controller has no blob {sha256[:12]}: upload it (UploadBlobs) and try again"
            ) from None
        data = await asyncio.to_thread(_read_limited, path, limit)
        if data is None:
            raise ValidationError(field, f"blob {sha256[:12]} is over {limit} bytes")
        if await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest()) != sha256:
            raise ValidationError(field, f"the stored blob {sha256[:12]} is damaged (it hashes otherwise)")
        return data

    # ---- new versions

    async def commit(self, name: str, content_id: str, created_by: str = "") -> tuple[dict[str, Any], bool]:
        """Make the uploaded tree whose manifest blob is `content_id` the next version of `name`: (the version,
        False), or (the latest, True) when that is the same content. Every file and chunk the manifest names must
        be in the blob store already (MissingBlobs, UploadBlobs); a refusal names the first missing ones."""
        check_name(name)
        self._may_add(name)
        check_sha256(content_id, "manifest_id")
        entries = await self.manifest(content_id)
        latest = self._latest(name)
        if latest is not None and latest["content_id"] == content_id:
            return latest, True
        wanted = [b for e in entries for b in e.blobs]
        absent = set(await self.files.missing(list(dict.fromkeys(wanted))))
        if absent:
            lost = [e.path for e in entries if absent.intersection(e.blobs)]
            named = ", ".join(lost[:_NAMED]) + (f" and {len(lost) - _NAMED} more" if len(lost) > _NAMED else "")
            raise ValidationError(
                "manifest_id",
                f"{len(lost)} of the {len(entries)} files are not (wholly) in the controller's blob store ({named}): "
                "upload what MissingBlobs names, then commit again",
            )
        table, table_error = None, ""
        candidate = table_candidate(entries)
        if candidate is not None:
            try:
                table = await self._profile(candidate)
            except DatasetError as exc:  # still a version of one file; only not a table jobs can name --target of
                table_error = str(exc)
        record = self._new_record(name, "upload", "", content_id, entries, created_by, table, table_error)
        return self._add(record)

    async def upload(self, name: str, filename: str, tmp: Path) -> dict[str, Any]:
        """UploadDataset of before: one CSV or Parquet file, profiled (refused when it is no table), committed as a
        version of one file (the CSV form of a Parquet file). Returns the version's table entry."""
        check_name(name)
        self._may_add(name)
        tmp, filename, source, (fmt, rows, columns, profile) = await asyncio.to_thread(prepare_upload, tmp, filename)
        digest, size = await asyncio.to_thread(self._adopt_blob, tmp)
        await self.blobs.publish(digest)
        manifest = single_file_manifest(filename, digest, size)
        content_id = await self._put_blob(manifest_bytes(manifest))
        table = _table(digest, filename, source, fmt, rows, columns, size, profile)
        latest = self._latest(name)
        if latest is not None and latest["content_id"] == content_id and latest.get("table"):
            return self.table(ref_text(latest))
        record = self._new_record(name, "upload", "", content_id, manifest, "", table, "")
        record, _ = self._add(record)
        return self.table(ref_text(record))

    async def add_reference(self, name: str, url: str, created_by: str = "") -> tuple[dict[str, Any], bool]:
        """Snapshot what s3://bucket/prefix or file:///path holds now (paths, sizes, ETags or mtime+size) as the
        next version of `name`, without copying a byte; (the latest, True) when the listing is unchanged."""
        check_name(name)
        self._may_add(name)
        scheme, bucket, where = dataset_refs.parse_url(url)
        canonical = dataset_refs.canonical_url(url)
        if scheme == "s3":
            client = getattr(self.blobs, "client", None)
            if client is None:
                raise ValidationError(
                    "url",
                    "s3:// references are listed with the controller's object store and its keys: configure "
                    '[blobs] uri = "s3://BUCKET?endpoint=HOST:PORT" (this controller keeps blobs in '
                    f"{redact_uri(self.blobs.uri)})",
                )
            objects = await asyncio.to_thread(dataset_refs.list_s3, client, bucket, where)
        else:
            objects = await asyncio.to_thread(dataset_refs.list_file, where)
        if not objects:
            raise ValidationError("url", f"{canonical} holds no files")
        data = listing_bytes(canonical, objects)
        content_id = listing_id(data)
        latest = self._latest(name)
        if latest is not None and latest["content_id"] == content_id:
            return latest, True
        await self._put_blob(data)
        entries = [ManifestEntry(o["path"], 0o644, "0" * 64, int(o["size"])) for o in objects]
        record = self._new_record(name, scheme, canonical, content_id, entries, created_by, None, "")
        return self._add(record)

    def _latest(self, name: str) -> dict[str, Any] | None:
        records = self.versions.get(name)
        return records[-1] if records else None

    def _new_record(
        self,
        name: str,
        source: str,
        url: str,
        content_id: str,
        entries: Sequence[ManifestEntry],
        created_by: str,
        table: dict[str, Any] | None,
        table_error: str,
    ) -> dict[str, Any]:
        return {
            "name": name,
            "version": 0,  # numbered by _add, with no await between the number and the append
            "source": source,
            "url": url,
            "content_id": content_id,
            "files": len(entries),
            "bytes": sum(e.size for e in entries),
            "created_at": time.time(),
            "created_by": created_by or principals.owner_name(principals.current()),  # the first one owns the name
            "table": table,
            "table_error": table_error,
        }

    def _add(self, record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        name = record["name"]
        latest = self._latest(name)
        if latest is not None and latest["content_id"] == record["content_id"]:  # the same commit, twice at once
            return latest, True
        self._may_add(name)  # again, with no await before the append: another user may have made the name meanwhile
        record["version"] = (int(latest["version"]) if latest else 0) + 1
        self.versions.setdefault(name, []).append(record)
        self.store.save_dataset_version(name, record["version"], record)
        self._refresh(name)
        log.info("dataset %s: version %d (%s, %d files, %d bytes)", name, record["version"], record["source"],
                 record["files"], record["bytes"])  # fmt: skip
        return record, False

    async def _profile(self, entry: ManifestEntry) -> dict[str, Any]:
        """A one-file version's table: the file (assembled from its chunks, checked) profiled as a single-file
        upload always was; its CSV form (the file itself, or a Parquet file's conversion) is a blob of its own."""
        if entry.size > MAX_TABLE_BYTES:
            raise DatasetError(f"{entry.path} has {entry.size} bytes; a table may have at most {MAX_TABLE_BYTES}")
        pieces = [await self.blobs.ensure(b) for b in entry.blobs]
        incoming = self.blobs.root / "incoming"
        tmp = incoming / f"table-{uuid.uuid4().hex}"
        try:
            csv_path, filename, source, profiled = await asyncio.to_thread(
                _table_file, pieces, entry, tmp, entry.path.rsplit("/", 1)[-1]
            )
            fmt, rows, columns, profile = profiled
            if csv_path == pieces[0]:
                digest, size = entry.sha256, entry.size
            else:
                digest, size = await asyncio.to_thread(self._adopt_blob, csv_path)
                await self.blobs.publish(digest)
        finally:
            await asyncio.to_thread(_unlink_all, tmp)
        return _table(digest, filename, source, fmt, rows, columns, size, profile)

    async def _put_blob(self, data: bytes) -> str:
        """Store small bytes (a manifest, a listing) as a blob; its sha256."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.blobs.path(digest)

        def write() -> bool:
            if path.is_file():
                return False
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{digest}.{uuid.uuid4().hex}.part")
            tmp.write_bytes(data)
            tmp.replace(path)
            return True

        if await asyncio.to_thread(write):
            await self.blobs.publish(digest)
        return digest

    def _adopt_blob(self, tmp: Path) -> tuple[str, int]:
        """Move a finished file into the blob store under its sha256 (blocking)."""
        digest = file_sha256(tmp)
        final = self.blobs.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(final)
        return digest, final.stat().st_size

    # ---- jobs

    def resolve(self, body: dict[str, Any]) -> dict[str, Any]:
        """`dataset: NAME[:VERSION]` of a spec becomes the exact version (`dataset_version`: name, version,
        content_id, source) and, with `target`, the table jobs train on (user:<sha256> with its target column and
        task). A version that is no table goes to a workload that reads a folder (a project, a script, one that
        takes no tabular dataset) as the task's TENSORFLEET_DATASET_DIR."""
        ref = body.get("dataset")
        given = body.get("dataset_version")
        if isinstance(ref, str) and (ref.startswith("user:") or not ref) and given is not None:
            self._check_recorded(given)  # a resubmit or retry of a job that recorded its version
            return body
        if given is not None:
            body = {k: v for k, v in body.items() if k != "dataset_version"}  # the catalog says which, not the body
        record = self._named(ref)
        if record is None:
            return body
        name = record["name"]
        pinned = {
            "name": name,
            "version": record["version"],
            "content_id": record["content_id"],
            "source": record["source"],
        }
        target = body.get("target")
        algorithm = spec_algorithm(body)
        if target is None and isinstance(algorithm, str) and not _takes_table(algorithm):
            rest = {k: v for k, v in body.items() if k not in ("target", "dataset")}
            if not rest.get("name"):
                rest["name"] = default_name(algorithm, name)
            return {**rest, "dataset": "", "dataset_version": pinned}
        entry = table_entry(name, record)
        if entry is None:
            raise JobSpecError(
                "dataset",
                f"{ref_text(record)} {_not_a_table(record)}; a folder dataset is read by a project, a script or a "
                "workload that takes no table (TENSORFLEET_DATASET_DIR)",
            )
        if not isinstance(target, str) or not target:
            raise JobSpecError("target", f"name the target column of {name} ({', '.join(entry['columns'])})")
        if target not in entry["columns"]:
            raise JobSpecError(
                "target", f"{target!r} is not a column of {name} (columns: {', '.join(entry['columns'])})"
            )
        profile = entry.get("profile")
        if profile is None:  # stored before uploads were profiled
            profile = inspect(self.blobs.path(entry["sha256"]), entry["filename"])[3]
            record["table"]["profile"] = profile
        try:
            check_features(entry["columns"], profile, target)
        except DatasetError as exc:
            raise JobSpecError("dataset", f"{name}: {exc}") from None
        task = infer_task(profile[target])
        rest = {k: v for k, v in body.items() if k != "target"}
        if not rest.get("name"):  # named after the dataset, not the user:<sha256> it becomes
            rest["name"] = default_name(spec_algorithm(body), name)
        return {
            **rest,
            "dataset": f"user:{entry['sha256']}",
            "dataset_params": {"target": target, "file": entry["filename"], "task": task},
            "dataset_version": pinned,
        }

    def _named(self, ref: Any) -> dict[str, Any] | None:
        """The version a spec's `dataset` names: NAME[:VERSION] of the catalog, or (as before) a unique prefix of
        8+ hex chars of an upload's sha256; None for anything else (a built-in, user:<sha256>)."""
        if not isinstance(ref, str) or not ref or ref.startswith("user:"):
            return None
        try:
            name, number = parse_ref(ref, "dataset")
        except ValidationError:
            return None
        if name in self.versions:
            return self.version(ref)
        if number is None and name not in BUILTIN_NAMES and len(name) >= 8:
            hits = [
                r for records in self.versions.values() for r in records
                if (r.get("table") or {}).get("sha256", "").startswith(name)
            ]  # fmt: skip
            return hits[-1] if len({h["table"]["sha256"] for h in hits}) == 1 else None
        if number is not None and name not in BUILTIN_NAMES:
            raise JobSpecError("dataset", f"no dataset {name!r} (datasets: {', '.join(sorted(self.versions))})")
        return None

    def _check_recorded(self, given: Any) -> None:
        if not isinstance(given, dict) or not {"name", "version", "content_id"} <= set(given):
            raise JobSpecError("dataset_version", "is recorded by the controller: name the dataset in `dataset`")
        try:
            record = self.version(f"{given['name']}:{given['version']}")
        except (NotFoundError, ValidationError) as exc:
            raise JobSpecError("dataset_version", f"{exc}") from None
        if record["content_id"] != given["content_id"]:
            raise JobSpecError("dataset_version", f"{ref_text(record)} is no longer the content this job recorded")

    # ---- deleting

    async def used_by(self, record: dict[str, Any], jobs: Iterable[Job]) -> list[str]:
        """Job ids and model name:version that refer to this version."""
        name, number = record["name"], record["version"]
        table_sha = (record.get("table") or {}).get("sha256", "")
        out: list[str] = []
        job_ids: set[str] = set()
        for job in jobs:
            pinned = job.spec.get("dataset_version")
            if isinstance(pinned, dict):
                hit = pinned.get("name") == name and pinned.get("version") == number
            else:
                hit = bool(table_sha) and job.spec.get("dataset") == f"user:{table_sha}"
            if hit:
                out.append(job.id)
                job_ids.add(job.id)
        for model in await self.store.model_versions():
            data = model.get("dataset") or {}
            hit = model.get("job_id") in job_ids or (
                data.get("name") == name
                and (data.get("version") == number or (bool(table_sha) and data.get("sha256") == table_sha))
            )
            if hit:
                out.append(f"{model['name']}:{model['version']}")
        return out

    async def delete(self, ref: str, jobs: Iterable[Job]) -> list[dict[str, Any]]:
        """Forget NAME:VERSION, or every version of NAME; refused while a job or a registered model refers to one
        (naming them). The blobs go at the next garbage collection when nothing else holds them."""
        name, number = parse_ref(ref, "name")
        records = [self.version(ref)] if number is not None else list(self.dataset(name))
        jobs = list(jobs)
        for record in records:
            users = await self.used_by(record, jobs)
            if users:
                raise JobError(f"dataset {ref_text(record)} is used by {_users(users)}; delete those first")
        for record in records:
            self.versions[name].remove(record)
            self.store.delete_dataset_version(name, record["version"])
        self._refresh(name)
        return records

    async def live_blobs(self) -> set[str]:
        """Every blob a kept version needs: manifests and listings, each file's chunks (or the file), tables' CSV
        forms. A manifest that cannot be read is kept itself (its files cannot be told)."""
        keep: set[str] = set()
        for records in list(self.versions.values()):
            for record in records:
                keep.add(record["content_id"])
                if record.get("table"):
                    keep.add(record["table"]["sha256"])
                if record["source"] != "upload":
                    continue
                try:
                    entries = await self.manifest(record["content_id"])
                except ValidationError as exc:
                    log.warning("gc: dataset %s cannot be read (%s); its files may go", ref_text(record), exc)
                    continue
                for entry in entries:
                    keep.update(entry.blobs)
                    keep.add(entry.sha256)
        return keep

    # ---- previews

    async def read_file(self, ref: str, path: str, limit: int = 0) -> tuple[dict[str, Any], dict[str, Any], bytes]:
        """The first `limit` bytes (0: READ_DEFAULT; at most READ_MAX) of one file of NAME[:VERSION]: (the version,
        the file as the tree lists it, the bytes), for the desktop app's previews. An upload reads its blob, or
        its first chunk(s); a file:// reference the file on this disk, an s3:// one a ranged GET; a reference whose
        file changed since its snapshot is refused, naming it."""
        if limit < 0:
            raise ValidationError("limit", f"must be 0 (the default) or a number of bytes, got {limit}")
        limit = min(limit or READ_DEFAULT, READ_MAX)
        record = self.version(ref)
        tree = await self.tree(record)
        found = next((f for f in tree if f["path"] == path), None)  # a linear scan: one preview, at most MAX_FILES
        if found is None:
            raise NotFoundError(f"{ref_text(record)} has no file {path!r}")
        if record["source"] == "upload":
            entry = next(e for e in await self.manifest(record["content_id"]) if e.path == path)
            pieces = [await self.blobs.ensure(b) for b in _first_pieces(entry, limit)]
            data = await asyncio.to_thread(_read_pieces, pieces, limit)
        elif record["source"] == "file":
            data = await asyncio.to_thread(_read_reference_file, record["url"], found, limit)
        else:
            data = await asyncio.to_thread(self._read_s3, record["url"], found, limit)
        return record, found, data

    def _read_s3(self, url: str, found: dict[str, Any], limit: int) -> bytes:
        """The first bytes of an s3:// reference's object, its ETag checked against the snapshot (blocking)."""
        from minio.error import S3Error

        client = getattr(self.blobs, "client", None)
        if client is None:
            raise ValidationError("url", "s3:// references are read with the controller's object store: none is set")
        _, bucket, prefix = dataset_refs.parse_url(url)
        key = f"{prefix}/{found['path']}" if prefix else found["path"]
        try:
            response = client.get_object(bucket, key, offset=0, length=limit) if found["size"] else None
            if response is None:
                return b""
            try:
                etag = str(response.headers.get("ETag", "")).strip('"')
                data = bytes(response.read(limit))
            finally:
                response.close()
                response.release_conn()
        except S3Error as exc:
            raise ValidationError("path", f"s3://{bucket}/{key}: {exc.code}: {exc.message}") from None
        if etag and found["etag"] and etag != found["etag"]:
            raise ValidationError("path", f"s3://{bucket}/{key} changed since this version's snapshot")
        return data

    async def preview(self, ref: str, rows: int) -> tuple[dict[str, Any], list[str], list[list[str]]]:
        entry = self.table(ref)
        path = await self.blobs.ensure(entry["sha256"])
        header, body = await asyncio.to_thread(head_rows, path, rows)
        return entry, header, body


def _users(users: list[str]) -> str:
    """job(s) a, b and model(s) m:1, naming the first few of each."""
    jobs = [u for u in users if ":" not in u]
    models = [u for u in users if ":" in u]
    parts = []
    for kind, items in (("job(s)", jobs), ("model(s)", models)):
        if items:
            more = f" and {len(items) - _NAMED} more" if len(items) > _NAMED else ""
            parts.append(f"{kind} {', '.join(items[:_NAMED])}{more}")
    return " and ".join(parts)


def _takes_table(algorithm: str) -> bool:
    """Whether the workload learns from a table (a `target` column); a project or script job reads the dataset
    as a folder unless the spec names a target."""
    try:
        workload = get_workload(algorithm, field="algorithm")
    except ValidationError:
        return True  # parse_job_spec refuses it with its own message
    return bool(workload.tasks) and IMAGES not in workload.tasks and algorithm not in ("project", "script")


def _not_a_table(record: dict[str, Any]) -> str:
    why = record.get("table_error") or (
        f"holds {record['files']} files" if record["source"] == "upload" else f"is a reference to {record['url']}"
    )
    return f"is not a table of one CSV or Parquet file ({why})"


def _table_file(
    pieces: list[Path], entry: ManifestEntry, tmp: Path, filename: str
) -> tuple[Path, str, dict[str, str], tuple[Any, ...]]:
    """(CSV path, its file name, source, inspect()) of a one-file version (blocking). A chunked file is assembled
    into `tmp` and must hash to the entry's sha256; a Parquet file is converted into its CSV form."""
    if len(pieces) == 1 and not filename.lower().endswith(".parquet"):
        return pieces[0], filename, {}, inspect(pieces[0], filename)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    with tmp.open("wb") as out:
        for piece in pieces:
            with piece.open("rb") as fh:
                while data := fh.read(1 << 20):
                    hasher.update(data)
                    out.write(data)
    if hasher.hexdigest() != entry.sha256:
        raise DatasetError(f"{entry.path}: its chunks do not make the file its manifest names (upload it again)")
    csv_path, name, source, profiled = prepare_upload(tmp, filename)
    return csv_path, name, source, profiled


def _unlink_all(tmp: Path) -> None:
    for path in (tmp, tmp.with_name(tmp.name + ".csv")):
        path.unlink(missing_ok=True)


def _first_pieces(entry: ManifestEntry, limit: int) -> tuple[str, ...]:
    """The blobs of a file that hold its first `limit` bytes: the file, or its first chunk(s)."""
    if not entry.chunks:
        return entry.blobs
    return entry.chunks[: max(1, -(-limit // CHUNK_BYTES))]


def _read_pieces(pieces: list[Path], limit: int) -> bytes:
    out = bytearray()
    for piece in pieces:
        with piece.open("rb") as fh:
            out += fh.read(limit - len(out))
        if len(out) >= limit:
            break
    return bytes(out)


def _read_reference_file(url: str, found: dict[str, Any], limit: int) -> bytes:
    """The first bytes of a file:// reference's file on the controller's disk, checked against the snapshot."""
    _, _, folder = dataset_refs.parse_url(url)
    full = Path(folder) / str(found["path"])
    try:
        with full.open("rb") as fh:
            stat = os.fstat(fh.fileno())
            if f"{stat.st_mtime_ns}:{stat.st_size}" != found["etag"]:
                raise ValidationError("path", f"{full} changed since this version's snapshot: add the folder again")
            data: bytes = fh.read(limit)
            return data
    except OSError as exc:
        raise ValidationError("path", f"cannot read {full} on the controller: {exc.strerror}") from None


def _read_limited(path: Path, limit: int) -> bytes | None:
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    return None if len(data) > limit else data


__all__ = ["BUILTIN_NAMES", "DatasetCatalog"]


def _table(
    digest: str, filename: str, source: Any, fmt: str, rows: int, columns: list[str], size: int, profile: Any
) -> dict[str, Any]:
    """A version's table record: its CSV form's blob and what profiling found (a Parquet upload keeps its source)."""
    return {
        "sha256": digest,
        "filename": filename,
        "format": "parquet" if source else fmt,
        "rows": rows,
        "columns": columns,
        "size": size,
        "profile": profile,
        "source": source,
    }
