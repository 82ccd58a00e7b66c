"""What a dataset reference holds now (issue 20): the objects under an s3:// prefix, listed with the controller's
object store client, or the files under a file:// folder on the controller's disk. Blocking; the catalog calls
them in a thread and snapshots the answer into a listing blob (dataset_versions.listing_bytes).

Each object is {"path" (relative to the prefix/folder, posix), "size", "etag"}: an S3 object's ETag, or
"mtime_ns:size" of a file, so that a change on use is detected without reading the data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import MAX_FILES, check_path


class ListingError(ValidationError):
    """The reference cannot be listed (no such bucket or folder, refused credentials, nothing in it)."""


def parse_url(url: str) -> tuple[str, str, str]:
    """(scheme, bucket or "", prefix or absolute folder) of s3://bucket/prefix or file:///abs/path."""
    parsed = urlparse(url.strip())
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValidationError("url", f"s3:// needs a bucket: s3://BUCKET/PREFIX, got {url[:200]!r}")
        if parsed.query or parsed.fragment:
            raise ValidationError("url", "an s3:// reference is s3://BUCKET/PREFIX (the endpoint is the controller's)")
        return "s3", parsed.netloc, unquote(parsed.path).strip("/")
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValidationError("url", f"file:// takes an absolute path (file:///mnt/data), got {url[:200]!r}")
        path = unquote(parsed.path)
        if not path.startswith("/") or "/../" in path + "/":
            raise ValidationError("url", f"file:// takes an absolute path without '..', got {url[:200]!r}")
        return "file", "", os.path.normpath(path)
    raise ValidationError("url", f"a reference is s3://BUCKET/PREFIX or file:///ABSOLUTE/PATH, got {url[:200]!r}")


def canonical_url(url: str) -> str:
    scheme, bucket, where = parse_url(url)
    if scheme == "s3":
        return f"s3://{bucket}/{where}" if where else f"s3://{bucket}"
    return f"file://{where}"


def list_file(folder: str) -> list[dict[str, Any]]:
    """The regular files under `folder` (symlinks followed to files inside or out; hidden files included)."""
    root = Path(folder)
    if not root.is_dir():
        raise ListingError("url", f"{folder} is not a folder on the controller (file:// is read where it runs)")
    out: list[dict[str, Any]] = []
    for current, dirs, names in os.walk(root, onerror=_raise):
        dirs.sort()
        for name in sorted(names):
            full = Path(current) / name
            try:
                stat = full.stat()
            except OSError:  # a dangling link, or gone meanwhile
                continue
            if not full.is_file():
                continue
            rel = full.relative_to(root).as_posix()
            check_path(rel, "url")
            out.append({"path": rel, "size": stat.st_size, "etag": f"{stat.st_mtime_ns}:{stat.st_size}"})
            if len(out) > MAX_FILES:
                raise ListingError("url", f"{folder} holds more than {MAX_FILES} files")
    return out


def _raise(exc: OSError) -> None:
    raise ListingError("url", f"cannot read {exc.filename}: {exc.strerror}")


def list_s3(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """The objects under `prefix/` in `bucket` (folder markers, keys ending in '/', left out)."""
    from minio.error import S3Error

    start = f"{prefix}/" if prefix else ""
    out: list[dict[str, Any]] = []
    try:
        for obj in client.list_objects(bucket, prefix=start, recursive=True):
            key = str(obj.object_name)
            if key.endswith("/"):
                continue
            rel = key[len(start) :]
            check_path(rel, "url")
            out.append({"path": rel, "size": int(obj.size or 0), "etag": str(obj.etag or "").strip('"')})
            if len(out) > MAX_FILES:
                raise ListingError("url", f"s3://{bucket}/{prefix} holds more than {MAX_FILES} objects")
    except S3Error as exc:
        raise ListingError("url", f"s3://{bucket}/{prefix}: {exc.code}: {exc.message}") from None
    except (OSError, ValueError) as exc:
        raise ListingError("url", f"cannot list s3://{bucket}/{prefix}: {str(exc).split(' (Caused by')[0]}") from None
    return out
