"""File downloads over HTTP (artifacts, models, datasets): streamed from disk in chunks, never read whole; the
sha256 in `X-Checksum-Sha256`, RFC 9530 `Repr-Digest` and a strong `ETag`, so a client checks what it got
without a second request; single and multiple byte ranges (Starlette's FileResponse does the ranges: 206 with
Content-Range, multipart/byteranges for several); an unsatisfiable range is a 416 problem document, a malformed
one is ignored (RFC 9110 §14.2: the whole file, 200); `If-None-Match` with the ETag is a 304; HEAD sends the
headers only."""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from fastapi import HTTPException, Request
from starlette.datastructures import Headers
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable, Response
from starlette.types import Receive, Scope, Send

from tensorfleet_desktop.controller.registry import BlobDamaged

CHUNK = 1 << 20  # bytes read (in a worker thread) and sent per step

#: Headers a download answers with, for a route's `responses=` (OpenAPI lists them).
DOWNLOAD_HEADERS: dict[str, dict[str, Any]] = {
    "Content-Disposition": {"description": "attachment; filename=...", "schema": {"type": "string"}},
    "X-Checksum-Sha256": {"description": "sha256 of the whole file, hex", "schema": {"type": "string"}},
    "Repr-Digest": {"description": "RFC 9530: sha-256=:<base64>: of the whole file", "schema": {"type": "string"}},
    "ETag": {"description": "the sha256, quoted (If-None-Match, If-Range)", "schema": {"type": "string"}},
    "Accept-Ranges": {"description": "bytes", "schema": {"type": "string"}},
}


def download_responses(media_type: str = "application/octet-stream") -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries of a download route: the file (200), a range of it (206), not modified (304)."""
    binary = {media_type: {"schema": {"type": "string", "format": "binary"}}}
    return {
        200: {"description": "the file", "content": binary, "headers": DOWNLOAD_HEADERS},
        206: {"description": "the bytes of the Range asked for", "content": binary, "headers": DOWNLOAD_HEADERS},
        304: {"description": "If-None-Match named this file's ETag: the client has it"},
    }


def repr_digest(sha256: str) -> str:
    """RFC 9530 `Repr-Digest` of a hex sha256."""
    return f"sha-256=:{base64.b64encode(bytes.fromhex(sha256)).decode()}:"


class DownloadResponse(FileResponse):
    """FileResponse that checks the file is the size it should be, answers a range past the end with a problem
    document, ignores a malformed Range, and runs `on_close` (a scratch file's removal) however the transfer
    ends."""

    chunk_size = CHUNK

    def __init__(
        self,
        path: Path,
        *,
        filename: str,
        media_type: str,
        sha256: str,
        size: int,
        headers: dict[str, str] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        etag = f'"{sha256}"'
        all_headers = {
            "X-Checksum-Sha256": sha256,
            "Repr-Digest": repr_digest(sha256),
            "ETag": etag,
            "Cache-Control": "private, no-cache",
            **(headers or {}),
        }
        super().__init__(path, headers=all_headers, media_type=media_type, filename=filename)
        self.size = size
        self.etag = etag
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._answer(scope, receive, send)
        finally:
            if self.on_close is not None:
                with anyio.CancelScope(shield=True):
                    await self.on_close()

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            stat_result = await anyio.to_thread.run_sync(os.stat, self.path)
        except FileNotFoundError:
            raise BlobDamaged(f"{self.filename}: its file is missing from the controller's store") from None
        if stat_result.st_size != self.size:
            raise BlobDamaged(f"{self.filename}: the stored file has {stat_result.st_size} bytes, not {self.size}")
        self.stat_result = stat_result
        self.set_stat_headers(stat_result)
        request = Headers(scope=scope)
        if self.etag in {tag.strip() for tag in request.get("if-none-match", "").split(",")}:
            await Response(status_code=304, headers={"ETag": self.etag})(scope, receive, send)
            return
        http_range = request.get("range")
        if_range = request.get("if-range")
        if http_range is not None and (if_range is None or self._should_use_range(if_range)):
            try:
                self._parse_range_header(http_range, self.size)
            except MalformedRangeHeader:
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]}
            except RangeNotSatisfiable:
                raise HTTPException(
                    416,
                    f"range {http_range[:80]!r} is outside the file's {self.size} bytes",
                    headers={"Content-Range": f"bytes */{self.size}"},
                ) from None
        await super().__call__(scope, receive, send)


def file_response(
    request: Request,
    path: Path,
    *,
    filename: str,
    media_type: str,
    sha256: str,
    size: int,
    headers: dict[str, str] | None = None,
    on_close: Callable[[], Awaitable[None]] | None = None,
) -> Response:
    """Stream the file at `path` (`size` bytes hashing to `sha256`) as an attachment named `filename`, with
    Range, HEAD and If-None-Match support and the checksum headers. `headers` are added; `on_close` runs once
    the response is over (sent, refused or cut off). A file of the wrong size is a data-loss error (500)."""
    del request  # the response reads Range and friends from the scope it is sent on
    return DownloadResponse(
        path, filename=filename, media_type=media_type, sha256=sha256, size=size, headers=headers, on_close=on_close
    )
