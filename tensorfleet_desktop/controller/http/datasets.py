"""Datasets over HTTP (issue 20: versions), the operations gRPC has: upload a CSV or Parquet file as the raw
request body (`curl -T iris.csv`; the next version of NAME, streamed to disk through the same receive_dataset
UploadDataset uses), or a tree: ask which blobs the controller lacks (`POST /datasets/blobs/missing`), send each
(`PUT /datasets/blobs/{sha256}`, checked), then commit its manifest (`POST /datasets/{name}/versions`); add an
s3:// or file:// reference (`POST /datasets/{name}/references`); list datasets with their versions, page a
version's files (`GET /datasets/{ref}/files`), read a file's first bytes (`GET /datasets/{ref}/files/{path}`),
preview, download a table and delete NAME or NAME:VERSION.

A new upload under a name makes its next version (none when the content equals the latest); jobs name
`NAME[:VERSION]` and record the exact version."""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_desktop.controller import operations
from tensorfleet_desktop.controller.dataset_catalog import READ_MAX
from tensorfleet_desktop.controller.dataset_versions import files_page, parse_ref, table_entry
from tensorfleet_desktop.controller.http import files, problems
from tensorfleet_desktop.controller.http.context import HttpContext, context
from tensorfleet_desktop.controller.http.paging import DEFAULT_LIMIT, MAX_CURSOR, MAX_LIMIT, paginate
from tensorfleet_desktop.controller.project_files import MAX_CHUNK, check_sha256
from tensorfleet_desktop.controller.registry import BlobDamaged

router = APIRouter()
Context = Annotated[HttpContext, Depends(context)]
Name = Annotated[str, Path(description="the dataset's name (letters, digits, '.', '_', '-')")]
Ref = Annotated[str, Path(description="NAME, or NAME:VERSION for one version")]

#: Content types an upload may declare. The file name decides how it is read (.csv or .parquet); curl sends
#: application/x-www-form-urlencoded with --data-binary unless told otherwise, and nothing with -T.
CSV_TYPES = ("text/csv", "application/octet-stream", "application/x-www-form-urlencoded", "")
PARQUET_TYPES = ("application/vnd.apache.parquet", "application/x-parquet")
MAX_PREVIEW_ROWS = 1000


class DatasetVersion(BaseModel):
    """One version: an uploaded tree (its manifest) or a reference's snapshot (its listing)."""

    name: str
    version: int
    source: str = Field(description="upload, s3 or file")
    url: str = Field(description="a reference's s3:// or file:// URL; empty for an upload")
    content_id: str = Field(description="an upload's manifest id; a reference's listing sha256")
    files: int
    bytes: int
    created_at: float
    created_by: str
    unchanged: bool = Field(False, description="a commit or add equal to the latest: no version was made")
    used_by: list[str] = Field(default_factory=list, description="jobs and models (name:version) that use it")


class Dataset(BaseModel):
    """A dataset, as `tensorfleet datasets list --json` shows it: its versions, and the table fields of its
    latest version when that is one CSV/Parquet file (empty otherwise)."""

    name: str
    sha256: str = Field(description="of the stored file (the CSV form of an uploaded Parquet file)")
    filename: str = Field(description="the stored file's name")
    format: str = Field(description="what was uploaded: csv or parquet")
    rows: int = Field(description="data rows (the header not counted)")
    columns: list[str]
    size: int = Field(description="bytes of the stored file (of the latest version when it is no table)")
    created_at: float = Field(description="unix seconds of the upload")
    source_filename: str = Field(description="an uploaded Parquet file's name; empty for a CSV")
    source_sha256: str = Field(description="an uploaded Parquet file's sha256; empty for a CSV")
    latest_version: int = 0
    versions: list[DatasetVersion] = Field(default_factory=list, description="oldest first")
    builtin: bool = False


class DatasetList(BaseModel):
    items: list[Dataset]
    total: int
    limit: int
    next_cursor: str | None
    page: int | None


class DatasetPreview(BaseModel):
    dataset: Dataset
    columns: list[str]
    rows: list[list[str]] = Field(description="the first data rows, each cell as the file spells it")


class DatasetFile(BaseModel):
    path: str
    size: int
    sha256: str = Field(description="an upload's content; empty for a reference")
    etag: str = Field(description="a reference's ETag (s3) or mtime_ns:size (file)")
    chunks: int = Field(description="pieces of a chunked file (0: one blob)")


class DatasetFiles(BaseModel):
    dataset: Dataset
    version: DatasetVersion
    files: list[DatasetFile]
    next_cursor: str = Field(description="empty on the last page")


class Commit(BaseModel):
    manifest_id: str = Field(description="sha256 of the manifest blob, uploaded with its files and chunks")


class Reference(BaseModel):
    url: str = Field(description="s3://bucket/prefix (the controller's object store) or file:///absolute/folder")


class BlobList(BaseModel):
    sha256: list[str]


class Missing(BaseModel):
    missing: list[str] = Field(description="those the controller lacks, in request order")


def version_body(record: dict[str, Any], unchanged: bool = False, used_by: list[str] | None = None) -> DatasetVersion:
    fields = {k: record.get(k, "") for k in ("name", "version", "source", "url", "content_id", "files", "bytes")}
    return DatasetVersion(
        **fields,
        created_at=record["created_at"],
        created_by=record.get("created_by", ""),
        unchanged=unchanged,
        used_by=used_by or [],
    )


def dataset_body(entry: dict[str, Any] | None, versions: list[dict[str, Any]] | None = None) -> Dataset:
    """A dataset at the edge (the fields gRPC DatasetInfo carries): `entry` the table, `versions` oldest first."""
    versions = versions or []
    source = (entry or {}).get("source") or {}
    latest = versions[-1] if versions else {}
    return Dataset(
        name=entry["name"] if entry else latest.get("name", ""),
        sha256=entry["sha256"] if entry else "",
        filename=entry["filename"] if entry else "",
        format=entry["format"] if entry else "",
        rows=entry["rows"] if entry else 0,
        columns=list(entry["columns"]) if entry else [],
        size=entry["size"] if entry else latest.get("bytes", 0),
        created_at=entry["created_at"] if entry else latest.get("created_at", 0.0),
        source_filename=source.get("filename", ""),
        source_sha256=source.get("sha256", ""),
        latest_version=latest.get("version", 0),
        versions=[version_body(v) for v in versions],
    )


def _named(ctx: HttpContext, name: str) -> Dataset:
    return dataset_body(*ctx.controller.catalog.info(name))


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _checksum(query: str | None, header: str | None) -> str:
    """The sha256 the client says the body has (query or header; both must agree), lower-case hex or ''."""
    given = [v.strip().lower() for v in (query, header) if v and v.strip()]
    if len(set(given)) > 1:
        raise ValidationError("sha256", "the sha256 query parameter and the X-Checksum-Sha256 header differ")
    digest = given[0] if given else ""
    if digest and (len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest)):
        raise ValidationError("sha256", f"must be 64 hex digits, got {digest[:80]!r}")
    return digest


async def _body(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client that goes away mid-upload is an incomplete upload (nothing is
    kept), not a controller error."""
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise ValidationError("data", "the client went away before the whole file arrived") from None


@router.put(
    "/datasets/{name}",
    tags=["datasets"],
    summary="Upload a dataset",
    status_code=201,
    response_model=Dataset,
    responses={
        200: {"model": Dataset, "description": "an existing dataset of that name was replaced"},
        **problems.error_responses(411, 413, 415, 422, 507),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the file's bytes (CSV, or Parquet with a .parquet file name)",
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in ("text/csv", "application/octet-stream", "application/vnd.apache.parquet")
            },
        }
    },
)
async def upload_dataset(
    ctx: Context,
    request: Request,
    response: Response,
    name: Name,
    filename: Annotated[
        str | None, Query(description="the file's name; .csv or .parquet decides how it is read (default NAME.csv)")
    ] = None,
    sha256: Annotated[str | None, Query(description="the file's sha256: the upload is refused if it differs")] = None,
    x_checksum_sha256: Annotated[str | None, Header(description="the file's sha256 (as the sha256 query)")] = None,
) -> Dataset:
    """Store a CSV or Parquet file under a name, streamed to disk as it arrives (never held in memory), then
    checked (size, sha256 if given, a header row and data rows) before the name points at it; a refused or cut-off
    upload leaves nothing behind. Jobs then train on it with `dataset: NAME` and `target: COLUMN`. Content-Length
    is required: it is the size the upload must reach."""
    media = _media_type(request.headers.get("content-type", ""))
    if media in PARQUET_TYPES:
        filename = filename or f"{name}.parquet"
        if not filename.lower().endswith(".parquet"):
            raise ValidationError("filename", f"the body is Parquet (Content-Type {media}): name it NAME.parquet")
    elif media in CSV_TYPES:
        filename = filename or f"{name}.csv"
    else:
        raise HTTPException(
            415,
            f"Content-Type {media!r} is not a dataset upload: send the file itself as the body "
            "(text/csv, application/vnd.apache.parquet or application/octet-stream; curl -T FILE)",
        )
    length = request.headers.get("content-length")
    if length is None:
        raise HTTPException(411, "Content-Length is required: the upload's size, which it must reach")
    if not length.strip().isdigit():
        raise ValidationError("Content-Length", f"must be a number of bytes, got {length[:40]!r}")
    size = int(length)
    if size > operations.MAX_DATASET_BYTES:
        raise HTTPException(
            413, f"the file has {size} bytes; a dataset may have at most {operations.MAX_DATASET_BYTES}"
        )
    digest = _checksum(sha256, x_checksum_sha256)
    replaced = name in ctx.controller.datasets
    await operations.receive_dataset(ctx.controller, name, filename, size, digest, _body(request))
    response.status_code = 200 if replaced else 201
    response.headers["Location"] = request.url.path
    return _named(ctx, name)


@router.get(
    "/datasets",
    tags=["datasets"],
    summary="List datasets",
    response_model=DatasetList,
    responses=problems.error_responses(422),
)
async def list_datasets(
    ctx: Context,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR, description="next_cursor of the page before")] = None,
    page: Annotated[int | None, Query(ge=1, description="page number (instead of cursor)")] = None,
    builtin: Annotated[bool, Query(description="list the built-in datasets (iris, digits, ...) too")] = False,
) -> DatasetList:
    """The stored datasets with their versions, newest first: what jobs can name as their `dataset`
    (NAME[:VERSION]); `builtin=true` lists the built-in ones after them."""
    catalog = ctx.controller.catalog
    entries = sorted((_named(ctx, n) for n in catalog.versions), key=_order, reverse=True)
    if builtin:
        entries += [
            Dataset(name=n, sha256="", filename="", format="", rows=0, columns=[], size=0, created_at=0.0,
                    source_filename="", source_sha256="", builtin=True)
            for n in catalog.builtin_names() if n not in catalog.versions
        ]  # fmt: skip
    found = paginate(entries, _order, limit, cursor, page)
    return DatasetList(
        items=found.items,
        total=found.total,
        limit=found.limit,
        next_cursor=found.next_cursor,
        page=found.page,
    )


def _order(entry: Dataset) -> list[Any]:
    return [not entry.builtin, entry.created_at, entry.name]


@router.get(
    "/datasets/{name}",
    tags=["datasets"],
    summary="Get a dataset",
    response_model=Dataset,
    responses=problems.error_responses(404),
)
async def get_dataset(ctx: Context, name: Name) -> Dataset:
    """One dataset: its versions, and its latest version's columns, size and checksum when that is a table."""
    return _named(ctx, name)


@router.get(
    "/datasets/{name}/preview",
    tags=["datasets"],
    summary="Preview a dataset",
    response_model=DatasetPreview,
    responses=problems.error_responses(404, 422),
)
async def preview_dataset(
    ctx: Context,
    name: Name,
    rows: Annotated[int, Query(ge=1, le=MAX_PREVIEW_ROWS, description="how many data rows")] = 10,
) -> DatasetPreview:
    """The header and first rows, to pick the target column before submitting a job on it."""
    entry, header, body = await ctx.controller.preview_dataset(name, rows)
    return DatasetPreview(dataset=dataset_body(entry), columns=header, rows=body)


@router.get(
    "/datasets/{name}/download",
    tags=["datasets"],
    summary="Download a dataset",
    response_class=Response,
    responses={**files.download_responses("text/csv"), **problems.error_responses(404, 416, 500)},
)
@router.head(
    "/datasets/{name}/download",
    tags=["datasets"],
    summary="Download a dataset",
    response_class=Response,
    responses={**files.download_responses("text/csv"), **problems.error_responses(404, 416, 500)},
)
async def download_dataset(ctx: Context, request: Request, name: Name) -> Response:
    """The stored file (CSV; an uploaded Parquet file is kept as its CSV form), with its sha256 in
    X-Checksum-Sha256 and HTTP Range for resuming; HEAD for its size and checksum alone. A stored file that no
    longer hashes right (or is gone) is a 500, never sent."""
    entry = ctx.controller.catalog.table(name)
    try:
        path = await ctx.controller.catalog.blobs.ensure(entry["sha256"])
    except FileNotFoundError:
        raise BlobDamaged(f"dataset {name}: its file is missing from the controller's store") from None
    return files.file_response(
        request,
        path,
        filename=entry["filename"],
        media_type="text/csv",
        sha256=entry["sha256"],
        size=entry["size"],
    )


@router.delete(
    "/datasets/{ref}",
    tags=["datasets"],
    summary="Delete a dataset or one version",
    response_model=Dataset,
    responses=problems.error_responses(404, 409),
)
async def delete_dataset(ctx: Context, ref: Ref) -> Dataset:
    """Forget NAME (every version) or NAME:VERSION; refused (409) while a job or a registered model refers to
    it, naming them. Its blobs go at the next garbage collection once nothing holds them. Answers what went."""
    gone = await ctx.controller.delete_dataset(ref)
    return dataset_body(table_entry(gone[-1]["name"], gone[-1]), gone)


@router.get(
    "/datasets/{ref}/files",
    tags=["datasets"],
    summary="A version's files",
    response_model=DatasetFiles,
    responses=problems.error_responses(404, 422),
)
async def dataset_files(
    ctx: Context,
    ref: Ref,
    prefix: Annotated[str, Query(max_length=4096, description="only the files under this folder")] = "",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    cursor: Annotated[str, Query(max_length=4096, description="next_cursor of the page before")] = "",
) -> DatasetFiles:
    """The file tree of NAME[:VERSION] (the latest by default), sorted by path, a page at a time."""
    catalog = ctx.controller.catalog
    record = catalog.version(ref)
    files, next_cursor = files_page(await catalog.tree(record), prefix, limit, cursor)
    return DatasetFiles(
        dataset=_named(ctx, parse_ref(ref)[0]),
        version=version_body(record, used_by=await catalog.used_by(record, ctx.controller.jobs.values())),
        files=[DatasetFile(**f) for f in files],
        next_cursor=next_cursor,
    )


@router.get(
    "/datasets/{ref}/files/{path:path}",
    tags=["datasets"],
    summary="A file's first bytes",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the file's first bytes"},
        **problems.error_responses(404, 422),
    },
)
async def read_file(
    ctx: Context,
    ref: Ref,
    path: str,
    limit: Annotated[int, Query(ge=0, le=READ_MAX, description="bytes at most (0: 1 MiB)")] = 0,
) -> Response:
    """The first `limit` bytes of one file of NAME[:VERSION] (a preview: a chunked file's first chunk(s) only);
    X-File-Size is its whole size and X-Truncated says whether it holds more."""
    _record, found, data = await ctx.controller.catalog.read_file(ref, path, limit)
    media = mimetypes.guess_type(path)[0] or "application/octet-stream"
    headers = {"X-File-Size": str(found["size"]), "X-Truncated": "true" if len(data) < found["size"] else "false"}
    return Response(content=data, media_type=media, headers=headers)


@router.post(
    "/datasets/blobs/missing",
    tags=["datasets"],
    summary="Which blobs the controller lacks",
    response_model=Missing,
    responses=problems.error_responses(422),
)
async def missing_blobs(ctx: Context, body: BlobList) -> Missing:
    """Of these sha256 (a tree's files, the chunks of its large files, its manifest), those to send."""
    return Missing(missing=await ctx.controller.project_files.missing(body.sha256))


@router.put(
    "/datasets/blobs/{sha256}",
    tags=["datasets"],
    summary="Upload one blob",
    status_code=204,
    response_class=Response,
    responses=problems.error_responses(411, 413, 422),
)
async def put_blob(ctx: Context, request: Request, sha256: str) -> Response:
    """A file or a chunk as the raw body; adopted only when it is whole and hashes to its sha256."""
    check_sha256(sha256, "sha256")
    length = request.headers.get("content-length")
    if length is None or not length.strip().isdigit():
        raise HTTPException(411, "Content-Length is required: the blob's size")
    incoming = ctx.controller.project_files.receive(sha256, int(length))
    try:
        async for chunk in _body(request):
            for start in range(0, len(chunk), MAX_CHUNK):
                await incoming.write(chunk[start : start + MAX_CHUNK])
        await incoming.finish()
    finally:
        await incoming.discard()
    return Response(status_code=204)


@router.post(
    "/datasets/{name}/versions",
    tags=["datasets"],
    summary="Commit an uploaded tree as the next version",
    status_code=201,
    response_model=DatasetVersion,
    responses={200: {"model": DatasetVersion, "description": "equal to the latest: none made"},
               **problems.error_responses(422)},
)  # fmt: skip
async def commit_version(ctx: Context, response: Response, name: Name, body: Commit) -> DatasetVersion:
    """After every blob the manifest names (and the manifest blob itself) is uploaded: version N+1, or the
    latest with `unchanged` (200) when the content is the same."""
    record, unchanged = await ctx.controller.catalog.commit(name, body.manifest_id)
    response.status_code = 200 if unchanged else 201
    return version_body(record, unchanged)


@router.post(
    "/datasets/{name}/references",
    tags=["datasets"],
    summary="Add an s3:// or file:// reference as the next version",
    status_code=201,
    response_model=DatasetVersion,
    responses={200: {"model": DatasetVersion, "description": "the listing is unchanged: none made"},
               **problems.error_responses(422)},
)  # fmt: skip
async def add_reference(ctx: Context, response: Response, name: Name, body: Reference) -> DatasetVersion:
    """Snapshot the prefix's or folder's listing (paths, sizes, ETags or mtime+size) without copying a byte."""
    record, unchanged = await ctx.controller.catalog.add_reference(name, body.url)
    response.status_code = 200 if unchanged else 201
    return version_body(record, unchanged)
