"""Where the controller keeps blobs (models, datasets, checkpoints), chosen by URI (docs/architecture.md,
'On-disk layout').

`file:///path`: the directory is the store. `s3://bucket?endpoint=host:port&secure=false`: the bucket is the
store and a local directory caches it; every blob that lands locally is uploaded (multipart for big ones),
and one missing locally is fetched on first use, so two controllers on one MongoDB + S3 see the same files.
Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and never appear in logs or errors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tensorfleet_agent.core.digest import blob_relpath, file_sha256
from tensorfleet_desktop.controller.store.base import redact_uri

log = logging.getLogger(__name__)

SUPPORTED = ("file", "s3")
_PART_SIZE = 64 * 2**20


class BlobStore:
    """The file backend; also the local side (cache) of the others."""

    remote = False  # True when `root` is only a cache of the store

    def __init__(self, root: Path, uri: str = "") -> None:
        self.root = root
        self.uri = uri or f"file://{root}"

    def path(self, sha256: str) -> Path:
        return self.root / blob_relpath(sha256)

    async def open(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def publish(self, sha256: str) -> None:
        """A blob just landed in `path(sha256)`: make it durable in the store."""

    async def ensure(self, sha256: str) -> Path:
        """The blob's local path, fetched first if only the store has it; FileNotFoundError when nobody has it."""
        path = self.path(sha256)
        if not await asyncio.to_thread(path.exists):
            raise FileNotFoundError(f"blob {sha256[:12]} is not in {self.uri}")
        return path

    async def delete(self, sha256: str) -> None:
        await asyncio.to_thread(self.path(sha256).unlink, missing_ok=True)

    async def intact(self, sha256: str, size: int) -> bool:
        """Whether the store holds this blob whole: a local file must hash to its name."""
        return await asyncio.to_thread(hashes_to, self.path(sha256), sha256)

    async def direct_download(self, sha256: str) -> tuple[str, int] | None:
        """(presigned GET URL, size) when agents can fetch the blob from the store themselves."""
        return None

    async def direct_upload(self, sha256: str) -> str | None:
        """A presigned PUT URL when agents can upload the blob to the store themselves."""
        return None

    async def listing(self) -> dict[str, tuple[int, float]]:
        """sha256 -> (size, modified time) of every blob the store holds."""
        return await asyncio.to_thread(self._local_listing)

    async def partials(self) -> dict[Path, tuple[int, float]]:
        """Unfinished files -> (size, modified time): `*.part` of transfers into the store and uploads or
        exports under incoming/. A live transfer keeps writing its file; a crash leaves it behind."""
        return await asyncio.to_thread(self._partials)

    def _partials(self) -> dict[Path, tuple[int, float]]:
        out = {}
        for path in [*self.root.glob("[0-9a-f][0-9a-f]/*.part"), *self.root.glob("incoming/*")]:
            try:
                stat = path.stat()
            except FileNotFoundError:  # finished meanwhile
                continue
            if path.is_file():
                out[path] = (stat.st_size, stat.st_mtime)
        return out

    def _local_listing(self) -> dict[str, tuple[int, float]]:
        out = {}
        for path in self.root.glob("[0-9a-f][0-9a-f]/*"):
            if len(path.name) == 64 and path.is_file():
                stat = path.stat()
                out[path.name] = (stat.st_size, stat.st_mtime)
        return out


class S3BlobStore(BlobStore):
    remote = True

    def __init__(self, uri: str, cache: Path, credentials: tuple[str, str] = ("", "")) -> None:
        super().__init__(cache, uri)
        try:
            from minio import Minio
        except ImportError:
            raise ValueError("an s3:// blob store needs the minio client: pip install 'tensorfleet[s3]'") from None
        parsed = urlparse(uri)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        self.bucket = parsed.netloc
        if "@" in parsed.netloc:
            raise ValueError(
                f"blob store URI {redact_uri(uri)!r}: keys do not go in the URI; put them under [blobs] in the "
                "config file (0600), or in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
            )
        self.endpoint = query.get("endpoint", "s3.amazonaws.com")
        secure = query.get("secure", "true").lower() not in ("false", "0", "no")
        if not self.bucket:
            raise ValueError(f"blob store URI {redact_uri(uri)!r} names no bucket (s3://BUCKET?endpoint=HOST:PORT)")
        key = os.environ.get("AWS_ACCESS_KEY_ID") or credentials[0]
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY") or credentials[1]
        if not key or not secret:
            raise ValueError(
                "an s3:// blob store needs credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or access_key and secret_key under [blobs] in the config file"
            )
        try:
            self.client: Any = Minio(self.endpoint, access_key=key, secret_key=secret, secure=secure)
        except ValueError as exc:
            raise ValueError(f"blob store URI {redact_uri(uri)!r}: {exc}") from None

    def key(self, sha256: str) -> str:
        return f"blobs/{blob_relpath(sha256)}"

    async def open(self) -> None:
        await super().open()
        await asyncio.to_thread(self.check_bucket)

    def check_bucket(self) -> None:
        from minio.error import S3Error

        where = f"S3 at {self.endpoint}"
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
                log.info("created bucket %s on %s", self.bucket, self.endpoint)
        except S3Error as exc:
            if exc.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"):
                raise ValueError(
                    f"{where} refused the credentials ({exc.code}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
                ) from None
            raise ValueError(f"{where}: bucket {self.bucket}: {exc.code}: {exc.message}") from None
        except (OSError, ValueError) as exc:
            reason = str(exc).split(" (Caused by")[0]
            raise ValueError(f"cannot reach {where}: {reason}") from None

    async def publish(self, sha256: str) -> None:
        path = self.path(sha256)
        await asyncio.to_thread(self.client.fput_object, self.bucket, self.key(sha256), str(path), part_size=_PART_SIZE)

    async def ensure(self, sha256: str) -> Path:
        path = self.path(sha256)
        if await asyncio.to_thread(path.exists):
            return path
        await asyncio.to_thread(self._download, sha256, path)
        return path

    def _download(self, sha256: str, path: Path) -> None:
        from minio.error import S3Error

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{sha256}.{uuid.uuid4().hex}.part")
        try:
            self.client.fget_object(self.bucket, self.key(sha256), str(tmp))
        except S3Error as exc:
            tmp.unlink(missing_ok=True)
            if exc.code == "NoSuchKey":
                raise FileNotFoundError(f"blob {sha256[:12]} is not in {self.uri}") from None
            raise
        tmp.replace(path)

    async def listing(self) -> dict[str, tuple[int, float]]:
        local = await super().listing()

        def remote() -> dict[str, tuple[int, float]]:
            out = {}
            for obj in self.client.list_objects(self.bucket, prefix="blobs/", recursive=True):
                name = obj.object_name.rsplit("/", 1)[-1]
                if len(name) == 64:
                    out[name] = (int(obj.size or 0), obj.last_modified.timestamp() if obj.last_modified else 0.0)
            return out

        return {**local, **await asyncio.to_thread(remote)}

    async def intact(self, sha256: str, size: int) -> bool:
        """A cached copy must hash right; otherwise the object must be in the bucket with its size. The object is
        not downloaded to check it: agents upload straight into the bucket, and the controller stays off that path."""
        from minio.error import S3Error

        if await asyncio.to_thread(self.path(sha256).exists):
            if await super().intact(sha256, size):
                return True
            await BlobStore.delete(self, sha256)  # a damaged cache entry: the bucket decides
        try:
            stat = await asyncio.to_thread(self.client.stat_object, self.bucket, self.key(sha256))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                return False
            raise
        return int(stat.size or 0) == size

    async def delete(self, sha256: str) -> None:
        await BlobStore.delete(self, sha256)
        await asyncio.to_thread(self.client.remove_object, self.bucket, self.key(sha256))

    async def direct_download(self, sha256: str) -> tuple[str, int] | None:
        from datetime import timedelta

        def sign() -> tuple[str, int]:
            size = int(self.client.stat_object(self.bucket, self.key(sha256)).size or 0)
            return self.client.presigned_get_object(self.bucket, self.key(sha256), expires=timedelta(hours=1)), size

        try:
            return await asyncio.to_thread(sign)
        except Exception as exc:  # not in the bucket yet, or the store is down: the controller sends it itself
            log.info("no direct download of %s: %s", sha256[:12], exc)
            return None

    async def direct_upload(self, sha256: str) -> str | None:
        from datetime import timedelta

        url: str = await asyncio.to_thread(
            self.client.presigned_put_object, self.bucket, self.key(sha256), expires=timedelta(hours=1)
        )
        return url


def hashes_to(path: Path, sha256: str) -> bool:
    """Whether the file at `path` exists and hashes to `sha256` (blocking)."""
    try:
        return file_sha256(path) == sha256
    except FileNotFoundError:
        return False


def open_blobs(uri: str, data_dir: Path, credentials: tuple[str, str] = ("", "")) -> BlobStore:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return BlobStore(Path(parsed.path), uri)
    if parsed.scheme == "s3":
        return S3BlobStore(uri, data_dir / "blob-cache", credentials)
    shown = uri.split("?")[0]
    raise ValueError(
        f"unsupported blob store URI {shown!r}: supported schemes are {', '.join(s + '://' for s in SUPPORTED)}"
    )


__all__ = ["SUPPORTED", "BlobStore", "S3BlobStore", "open_blobs"]
