"""Blobs to and from an object store by presigned URL (blocking; run in a thread).

The controller hands out the URLs when its blobs live in S3, so that datasets, checkpoints and models go
straight between agent and store. A download is checked against its digest before it becomes visible.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlparse

from tensorfleet_agent.core.errors import Unavailable, ValidationError
from tensorfleet_agent.runtime.blobs import BlobStore

_CHUNK = 1 << 20
_TIMEOUT = 60.0


def check_url(url: str, field: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValidationError(field, f"must be an http(s) URL, got {url[:60]!r}")
    if len(url) > 8192:
        raise ValidationError(field, "is longer than 8192 characters")
    return url


def fetch(store: BlobStore, sha256: str, size: int, url: str) -> None:
    writer = store.writer(sha256, size)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
            while data := response.read(_CHUNK):
                writer.write(data)
        writer.commit()
    except urllib.error.HTTPError as exc:
        writer.abort()
        raise Unavailable(f"the blob store answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        writer.abort()
        raise Unavailable(f"cannot reach the blob store: {exc}") from None
    except BaseException:
        writer.abort()
        raise


def push(store: BlobStore, sha256: str, url: str) -> int:
    path = store.path(sha256)
    size = path.stat().st_size
    with path.open("rb") as body:
        request = urllib.request.Request(url, data=body, method="PUT", headers={"Content-Length": str(size)})
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise Unavailable(f"the blob store answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise Unavailable(f"cannot reach the blob store: {exc}") from None
    return size
