"""Datasets over HTTP: upload a CSV or Parquet file as the raw request body (`curl -T iris.csv` or
`--data-binary @iris.csv`), streamed to disk through the same receive_dataset gRPC UploadDataset uses; list,
preview, download and delete them.

A dataset has no versions: uploading under a name that exists replaces what the name points at (jobs already
submitted keep training on the file they were given: a job names a dataset's content by its sha256)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_desktop.controller import operations
from tensorfleet_desktop.controller.http import files, problems
from tensorfleet_desktop.controller.http.context import HttpContext, context
from tensorfleet_desktop.controller.http.paging import DEFAULT_LIMIT, MAX_CURSOR, MAX_LIMIT, paginate
from tensorfleet_desktop.controller.registry import BlobDamaged

router = APIRouter()
Context = Annotated[HttpContext, Depends(context)]
Name = Annotated[str, Path(description="the dataset's name (letters, digits, '.', '_', '-')")]

#: Content types an upload may declare. The file name decides how it is read (.csv or .parquet); curl sends
#: application/x-www-form-urlencoded with --data-binary unless told otherwise, and nothing with -T.
CSV_TYPES = ("text/csv", "application/octet-stream", "application/x-www-form-urlencoded", "")
PARQUET_TYPES = ("application/vnd.apache.parquet", "application/x-parquet")
MAX_PREVIEW_ROWS = 1000


class Dataset(BaseModel):
    """An uploaded dataset, as `tensorfleet datasets list --json` shows it."""

    name: str
    sha256: str = Field(description="of the stored file (the CSV form of an uploaded Parquet file)")
    filename: str = Field(description="the stored file's name")
    format: str = Field(description="what was uploaded: csv or parquet")
    rows: int = Field(description="data rows (the header not counted)")
    columns: list[str]
    size: int = Field(description="bytes of the stored file")
    created_at: float = Field(description="unix seconds of the upload")
    source_filename: str = Field(description="an uploaded Parquet file's name; empty for a CSV")
    source_sha256: str = Field(description="an uploaded Parquet file's sha256; empty for a CSV")


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


def dataset_body(entry: dict[str, Any]) -> Dataset:
    """The catalog's entry at the edge (the fields gRPC DatasetInfo carries)."""
    source = entry.get("source") or {}
    return Dataset(
        name=entry["name"],
        sha256=entry["sha256"],
        filename=entry["filename"],
        format=entry["format"],
        rows=entry["rows"],
        columns=list(entry["columns"]),
        size=entry["size"],
        created_at=entry["created_at"],
        source_filename=source.get("filename", ""),
        source_sha256=source.get("sha256", ""),
    )


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
    entry = await operations.receive_dataset(ctx.controller, name, filename, size, digest, _body(request))
    response.status_code = 200 if replaced else 201
    response.headers["Location"] = request.url.path
    return dataset_body(entry)


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
) -> DatasetList:
    """The uploaded datasets, newest first: what jobs can name as their `dataset`."""
    entries = sorted(ctx.controller.datasets.values(), key=_order, reverse=True)
    found = paginate(entries, _order, limit, cursor, page)
    return DatasetList(
        items=[dataset_body(e) for e in found.items],
        total=found.total,
        limit=found.limit,
        next_cursor=found.next_cursor,
        page=found.page,
    )


def _order(entry: dict[str, Any]) -> list[Any]:
    return [entry["created_at"], entry["name"]]


@router.get(
    "/datasets/{name}",
    tags=["datasets"],
    summary="Get a dataset",
    response_model=Dataset,
    responses=problems.error_responses(404),
)
async def get_dataset(ctx: Context, name: Name) -> Dataset:
    """One dataset's columns, size and checksum. A dataset has no versions: a new upload under its name
    replaces it."""
    return dataset_body(ctx.controller.dataset(name))


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
    entry = ctx.controller.dataset(name)
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
    "/datasets/{name}",
    tags=["datasets"],
    summary="Delete a dataset",
    response_model=Dataset,
    responses=problems.error_responses(404, 409),
)
async def delete_dataset(ctx: Context, name: Name) -> Dataset:
    """Forget a dataset; refused (409) while a job or a registered model refers to it, since they would lose
    their training data. Its file goes once no dataset names it."""
    return dataset_body(await ctx.controller.delete_dataset(name))
