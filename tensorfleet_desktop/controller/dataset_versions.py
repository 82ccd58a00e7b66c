"""Dataset versions (issue 20), the pure part: naming NAME[:VERSION], a version's record, reference listings and
pages of a version's file tree. No I/O; the catalog (dataset_catalog.py) applies them.

A dataset is a name with versions 1..N. A version's record (a store row, NAME:VERSION):

    {"name", "version", "source": "upload" | "s3" | "file", "url" (a reference's, else ""), "content_id",
     "files", "bytes", "created_at", "created_by", "table": {...} | None, "table_error": ""}

An upload's content id is its manifest id (tensorfleet_agent.core.manifest); a reference's is the sha256 of its
listing blob, `listing_bytes`: the canonical JSON {"url", "objects": [{"path", "size", "etag"}]} of what the
prefix or folder held when it was added. `table` is set when the version is one CSV or Parquet file: the fields a
single-file dataset always had (sha256 of the stored CSV form, filename, format, rows, columns, profile, source),
so `--dataset NAME --target COL` jobs work on it as before.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import MAX_FILES, ManifestEntry, check_path

SOURCES = ("upload", "s3", "file")
MAX_NAME = 128
MAX_PAGE = 10_000
DEFAULT_PAGE = 1000
MAX_LISTING_BYTES = 64 << 20
_REF = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,127})(?::([0-9]{1,9}))?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TABLE_SUFFIXES = (".csv", ".parquet")


def check_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(
            field,
            f"a dataset name holds letters, digits, '.', '_' and '-' (at most {MAX_NAME}), got {str(name)[:80]!r}",
        )
    return name


def parse_ref(ref: str, field: str = "ref") -> tuple[str, int | None]:
    """(name, version or None for the latest) of NAME or NAME:VERSION."""
    match = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        raise ValidationError(field, f"must be NAME or NAME:VERSION, got {str(ref)[:80]!r}")
    version = int(match.group(2)) if match.group(2) is not None else None
    if version is not None and version < 1:
        raise ValidationError(field, f"versions start at 1, got {ref!r}")
    return match.group(1), version


def ref_text(record: Mapping[str, Any]) -> str:
    return f"{record['name']}:{record['version']}"


def legacy_table(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The table fields of a single-file dataset entry (as stored before versions, or as prepared at upload)."""
    return {
        "sha256": entry["sha256"],
        "filename": entry["filename"],
        "format": entry["format"],
        "rows": entry["rows"],
        "columns": list(entry["columns"]),
        "size": entry["size"],
        "profile": entry.get("profile"),
        "source": dict(entry.get("source") or {}),
    }


def table_entry(name: str, record: Mapping[str, Any]) -> dict[str, Any] | None:
    """A version's table as a single-file dataset entry (what previews, `--target` jobs and DatasetInfo's table
    fields read), or None when the version is not one table."""
    table = record.get("table")
    if not table:
        return None
    return {"name": name, **table, "created_at": record["created_at"], "version": record["version"]}


def single_file_manifest(filename: str, sha256: str, size: int) -> tuple[ManifestEntry, ...]:
    return (ManifestEntry(filename, 0o644, sha256, size),)


def table_candidate(entries: Sequence[ManifestEntry]) -> ManifestEntry | None:
    """The one file of a version that is a single CSV or Parquet file."""
    if len(entries) == 1 and entries[0].path.lower().endswith(TABLE_SUFFIXES) and "/" not in entries[0].path:
        return entries[0]
    return None


# ---- reference listings


def listing_bytes(url: str, objects: Sequence[Mapping[str, Any]]) -> bytes:
    """The canonical encoding of a reference's snapshot: its id (sha256) is the version's content id, so the same
    listing gives the same id and an unchanged `datasets add` makes no version."""
    rows = [
        {"path": str(o["path"]), "size": int(o["size"]), "etag": str(o["etag"])}
        for o in sorted(objects, key=lambda o: str(o["path"]))
    ]
    text = json.dumps({"url": url, "objects": rows}, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return text.encode("utf-8")


def listing_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listing_from_bytes(data: bytes) -> tuple[str, list[dict[str, Any]]]:
    """(url, objects sorted by path) of a listing blob, checked: every path relative and normalized, sizes whole."""
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError("listing", f"is not UTF-8 JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("url"), str) or not isinstance(body.get("objects"), list):
        raise ValidationError("listing", 'must be an object {"url", "objects"}')
    objects: list[dict[str, Any]] = []
    for i, item in enumerate(body["objects"]):
        if not isinstance(item, dict):
            raise ValidationError(f"listing.objects[{i}]", "is not an object")
        path, size, etag = item.get("path"), item.get("size"), item.get("etag")
        check_path(str(path), f"listing.objects[{i}].path")
        if type(size) is not int or size < 0 or not isinstance(etag, str):
            raise ValidationError(f"listing.objects[{i}]", "needs a size (bytes) and an etag")
        objects.append({"path": path, "size": size, "etag": etag})
    if len(objects) > MAX_FILES:
        raise ValidationError("listing", f"holds more than {MAX_FILES} objects")
    objects.sort(key=lambda o: o["path"])
    return body["url"], objects


# ---- a version's file tree, a page at a time


def files_page(
    files: Sequence[dict[str, Any]], prefix: str, limit: int, cursor: str
) -> tuple[list[dict[str, Any]], str]:
    """(files under `prefix` after `cursor`, next cursor or "") of `files` sorted by path. The cursor is the last
    path of the page before: stable while the version is (a version never changes)."""
    if not 0 <= limit <= MAX_PAGE:
        raise ValidationError("limit", f"must be between 0 and {MAX_PAGE}, got {limit}")
    limit = limit or DEFAULT_PAGE
    folder = prefix.strip("/")
    if folder:
        check_path(folder, "prefix")
    paths = [f["path"] for f in files]
    start = bisect.bisect_right(paths, cursor) if cursor else 0
    if folder:
        start = max(start, bisect.bisect_left(paths, folder + "/"))
    out: list[dict[str, Any]] = []
    for item in files[start:]:
        if folder and not item["path"].startswith(folder + "/"):
            break  # sorted: paths sharing the folder's prefix are one run
        if len(out) == limit:
            return out, out[-1]["path"]
        out.append(item)
    return out, ""


def manifest_files(entries: Sequence[ManifestEntry]) -> list[dict[str, Any]]:
    return [
        {"path": e.path, "size": e.size, "sha256": e.sha256, "etag": "", "chunks": len(e.chunks)}
        for e in sorted(entries, key=lambda e: e.path)
    ]


def listing_files(objects: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"path": o["path"], "size": o["size"], "sha256": "", "etag": o["etag"], "chunks": 0} for o in objects]
