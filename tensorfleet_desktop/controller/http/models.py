"""The model registry over HTTP: versions listed page by page (the `?page=1&limit=10` form and a cursor), one
version by NAME (latest), NAME:VERSION or NAME@ALIAS, its download (sha256 headers, Range), aliases, tags,
descriptions, deletion and the statistics the CLI shows. Each route is the registry call (or operations.py
function) the gRPC service makes, so the rules and messages are the same; the core's errors answer as problem
documents (422 naming the field, 404, 500 for a stored file that no longer hashes right)."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_desktop.controller import operations
from tensorfleet_desktop.controller.http import problems
from tensorfleet_desktop.controller.http.context import HttpContext, context
from tensorfleet_desktop.controller.http.files import download_responses, file_response
from tensorfleet_desktop.controller.http.paging import DEFAULT_LIMIT, MAX_LIMIT, paginate
from tensorfleet_desktop.controller.registry import MAX_VERSION, NAME, ModelNotFound, check_alias, model_config

router = APIRouter(tags=["models"])

Ctx = Annotated[HttpContext, Depends(context)]
Ref = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        description="NAME (its latest version), NAME:VERSION or NAME@ALIAS",
        examples=["wine-logreg", "wine-logreg:2", "wine-logreg@production"],
    ),
]
Name = Annotated[str, Path(min_length=1, max_length=128, description="a model name", examples=["wine-logreg"])]
Alias = Annotated[str, Path(min_length=1, max_length=64, description="an alias (production, staging, ...)")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="versions per page")]
PageNo = Annotated[int | None, Query(ge=1, description="the page number, 1-based (not with cursor)")]
Cursor = Annotated[str | None, Query(max_length=1000, description="next_cursor of the page before (not with page)")]
Format = Literal["skops", "safetensors", "pickle", "joblib", "onnx"]
MAX_FILTER = 200
#: A download's file name extension per format.
EXTENSIONS = {"skops": "skops", "safetensors": "safetensors", "pickle": "pkl", "joblib": "joblib", "onnx": "onnx"}


# ---- bodies


class ModelVersion(BaseModel):
    """One registered version of a model: what the registry recorded when the job that made it succeeded."""

    name: str
    version: int
    ref: str = Field(description="NAME:VERSION, for the routes that take a ref")
    algorithm: str
    format: str = Field(description="the stored format: skops or safetensors (+ config), or a project's own")
    hyperparameters: dict[str, Any]
    metrics: dict[str, float | None]
    aliases: list[str]
    tags: list[str]
    description: str
    dataset: dict[str, Any] = Field(description="the dataset it was trained on (name, version, sha256, split)")
    job_id: str
    task_ids: list[str]
    feature_names: list[str]
    classes: list[str]
    framework_versions: dict[str, str]
    size: int = Field(description="bytes of the stored file")
    sha256: str = Field(description="of the stored file")
    created_at: float = Field(description="unix time of registration")
    blob_status: str | None = Field(
        description='the stored file: "" there and intact, MISSING or DAMAGED (downloads fail until it is '
        "restored); null when not checked (a deleted version)"
    )


class ModelPage(BaseModel):
    items: list[ModelVersion] = Field(description="newest first")
    total: int = Field(description="versions that match the filters")
    page: int
    limit: int
    pages: int
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class AlgorithmStats(BaseModel):
    algorithm: str
    count: int = Field(description="versions of models of this algorithm")
    avg_accuracy: float | None = Field(description="mean test_accuracy of those that have one")
    best_accuracy: float | None


class ModelStats(BaseModel):
    total_models: int = Field(description="versions in the registry")
    algorithm_stats: list[AlgorithmStats]
    recent_models: list[ModelVersion] = Field(description="the latest registered, newest first")


class AliasIn(BaseModel):
    version: int = Field(ge=1, le=MAX_VERSION, description="the version NAME@ALIAS is to point at")


class TagIn(BaseModel):
    tag: str = Field(description="1 to 64 characters without spaces or commas", examples=["baseline"])


class DescriptionIn(BaseModel):
    description: str = Field(description="the version's new description (at most 4096 characters)")


# ---- conversion


def model_of(record: dict[str, Any]) -> ModelVersion:
    """A registry record as JSON (the fields gRPC's ModelVersion carries)."""
    return ModelVersion(
        name=record["name"],
        version=int(record["version"]),
        ref=f"{record['name']}:{record['version']}",
        algorithm=record["algorithm"],
        format=record["format"],
        hyperparameters=record.get("hyperparameters", {}),
        metrics={k: float(v) if v is not None else None for k, v in record.get("metrics", {}).items()},
        aliases=list(record.get("aliases", [])),
        tags=list(record.get("tags", [])),
        description=record.get("description", ""),
        dataset=record.get("dataset", {}),
        job_id=record.get("job_id", ""),
        task_ids=[str(t) for t in record.get("task_ids", [])],
        feature_names=[str(f) for f in record.get("feature_names", [])],
        classes=[str(c) for c in record.get("classes", [])],
        framework_versions={k: str(v) for k, v in record.get("framework_versions", {}).items()},
        size=int(record.get("size", 0)),
        sha256=record.get("sha256", ""),
        created_at=float(record.get("created_at", 0.0)),
        blob_status=record.get("blob"),
    )


async def _checked(ctx: HttpContext, record: dict[str, Any]) -> ModelVersion:
    """The record with its file's state (hashed once, then again only when the file changes)."""
    return model_of((await ctx.controller.registry.with_blob_status([record]))[0])


def _key(record: dict[str, Any]) -> tuple[float, str, int]:
    """A version's place in the list, newest first: what a cursor names (unique: a name's versions are)."""
    return (float(record.get("created_at", 0.0)), str(record["name"]), int(record["version"]))


async def _page(ctx: HttpContext, limit: int, cursor: str | None, page: int | None, **filters: str) -> ModelPage:
    """One page of the versions the filters match, by number or by a cursor naming the last version the client
    saw (so a version registered meanwhile never repeats one, and a cursor holds whatever `limit` comes next)."""
    versions = await operations.matching_models(ctx.controller, **filters)
    versions.sort(key=_key, reverse=True)  # the registry's order; equal times (seen in a bulk import) by name
    found = paginate(versions, _key, limit, cursor, page)
    if found.page is not None:
        number = found.page
    else:  # the page number form's page its first version is on
        at = next((i for i, v in enumerate(versions) if v is found.items[0]), 0) if found.items else len(versions)
        number = at // limit + 1
    items = await ctx.controller.registry.with_blob_status(found.items)
    return ModelPage(
        items=[model_of(r) for r in items],
        total=found.total,
        page=number,
        limit=limit,
        pages=operations.ModelPage(items, number, limit, found.total).pages,
        next_cursor=found.next_cursor,
    )


def _name(name: str) -> str:
    """A model name as the registry takes one (a ref with :VERSION or @ALIAS is not a name)."""
    if not NAME.match(name):
        raise ValidationError(
            "name",
            f"{name[:80]!r} is not a model name: letters, digits, '.', '_' or '-', starting with a letter or digit "
            "(no :VERSION or @ALIAS here)",
        )
    return name


# ---- routes


@router.get("/models", response_model=ModelPage, responses=problems.error_responses(422))
async def list_models(
    ctx: Ctx,
    name: Annotated[str, Query(max_length=MAX_FILTER, description="only versions of this model")] = "",
    algorithm: Annotated[str, Query(max_length=MAX_FILTER, description="only models of this algorithm")] = "",
    tag: Annotated[str, Query(max_length=MAX_FILTER, description="only versions with this tag")] = "",
    alias: Annotated[str, Query(max_length=MAX_FILTER, description="only the version this alias names")] = "",
    min_metric: Annotated[
        str,
        Query(
            max_length=MAX_FILTER,
            description="NAME=NUMBER: only versions whose metric NAME is at least NUMBER",
            examples=["test_accuracy=0.9"],
        ),
    ] = "",
    limit: Limit = DEFAULT_LIMIT,
    page: PageNo = None,
    cursor: Cursor = None,
) -> ModelPage:
    """Model versions, newest first, filtered as `tensorfleet models list` filters them; pages by number
    (`?page=2&limit=10`) or by cursor (`next_cursor`)."""
    filters = {"name": name, "algorithm": algorithm, "tag": tag, "alias": alias, "min_metric": min_metric}
    return await _page(ctx, limit, cursor, page, **filters)


@router.get("/models/stats", response_model=ModelStats)
async def model_stats(ctx: Ctx) -> ModelStats:
    """What `tensorfleet models stats` shows: versions per algorithm with their average and best test accuracy,
    and the latest versions. (A model named `stats` is reached as `stats:VERSION` or `stats@ALIAS`.)"""
    stats = await ctx.controller.registry.stats()
    recent = await ctx.controller.registry.with_blob_status(stats["recent_models"])
    return ModelStats(
        total_models=stats["total_models"],
        algorithm_stats=[AlgorithmStats(**row) for row in stats["algorithm_stats"]],
        recent_models=[model_of(r) for r in recent],
    )


@router.get("/models/{ref}", response_model=ModelVersion, responses=problems.error_responses(404, 422))
async def get_model(ctx: Ctx, ref: Ref) -> ModelVersion:
    """One version's metadata: parameters, metrics, dataset, aliases, tags, sha256 and whether its stored file
    is intact."""
    return await _checked(ctx, await ctx.controller.registry.resolve(ref))


@router.get("/models/{name}/versions", response_model=ModelPage, responses=problems.error_responses(404, 422))
async def model_versions(
    ctx: Ctx, name: Name, limit: Limit = DEFAULT_LIMIT, page: PageNo = None, cursor: Cursor = None
) -> ModelPage:
    """Every version of one model, newest first; 404 when no version has this name."""
    found = await _page(ctx, limit, cursor, page, name=_name(name))
    if not found.total:
        raise ModelNotFound(f"no model {name!r}")
    return found


@router.get("/models/{ref}/config", response_model=dict[str, Any], responses=problems.error_responses(404, 422))
async def model_config_json(ctx: Ctx, ref: Ref) -> dict[str, Any]:
    """The JSON that goes with a downloaded model (a torch model's layers and feature scaling, which the
    safetensors file needs to be rebuilt; `{}` for models that need none): what the CLI writes to PATH.json."""
    return model_config(await ctx.controller.registry.resolve(ref))


@router.get(
    "/models/{ref}/download",
    response_class=Response,
    responses={**download_responses(), **problems.error_responses(404, 416, 422, 500, 507)},
)
@router.head(
    "/models/{ref}/download",
    response_class=Response,
    responses={**download_responses(), **problems.error_responses(404, 416, 422, 500, 507)},
)
async def download_model(
    ctx: Ctx,
    request: Request,
    ref: Ref,
    format: Annotated[
        Format | None,
        Query(
            description="the stored format when absent (skops, or safetensors + /config); pickle and joblib only "
            "on request, converted from skops; onnx converted"
        ),
    ] = None,
) -> Response:
    """The version's file, streamed: checked against its sha256 before it is sent, the sha256 in
    `X-Checksum-Sha256`, `Repr-Digest` and `ETag`; resumable with `Range`. `X-Model-Ref` names the version
    (an alias or a bare name resolves to one), `X-Model-Format` the file's format."""
    stack = contextlib.AsyncExitStack()
    try:
        model = await stack.enter_async_context(operations.exported_model(ctx.controller, ref, format or ""))
        record = model.record
        headers = {"X-Model-Ref": f"{record['name']}:{record['version']}", "X-Model-Format": model.format}
        return file_response(
            request,
            model.path,
            filename=f"{record['name']}-v{record['version']}.{EXTENSIONS.get(model.format, model.format)}",
            media_type="application/octet-stream",
            sha256=model.sha256,
            size=model.size,
            headers=headers,
            on_close=stack.aclose,
        )
    except BaseException:
        await stack.aclose()
        raise


@router.put("/models/{name}/aliases/{alias}", response_model=ModelVersion, responses=problems.error_responses(404, 422))
async def set_alias(ctx: Ctx, name: Name, alias: Alias, body: AliasIn) -> ModelVersion:
    """Point NAME@ALIAS at a version (moving it off the one it named before), as `models alias set`."""
    record = await ctx.controller.registry.set_alias(f"{_name(name)}:{body.version}", alias)
    return await _checked(ctx, record)


@router.delete(
    "/models/{name}/aliases/{alias}", response_model=ModelVersion, responses=problems.error_responses(404, 422)
)
async def remove_alias(ctx: Ctx, name: Name, alias: Alias) -> ModelVersion:
    """Drop NAME@ALIAS; answers with the version it pointed at."""
    return await _checked(ctx, await ctx.controller.registry.remove_alias(_name(name), check_alias(alias)))


@router.post("/models/{ref}/tags", response_model=ModelVersion, responses=problems.error_responses(404, 422))
async def tag_model(ctx: Ctx, ref: Ref, body: TagIn) -> ModelVersion:
    """Add a tag to a version (`models list?tag=` finds it)."""
    return await _checked(ctx, await ctx.controller.registry.tag(ref, body.tag))


@router.patch("/models/{ref}", response_model=ModelVersion, responses=problems.error_responses(404, 422))
async def describe_model(ctx: Ctx, ref: Ref, body: DescriptionIn) -> ModelVersion:
    """Set a version's description."""
    return await _checked(ctx, await ctx.controller.registry.describe(ref, body.description))


@router.delete("/models/{ref}", response_model=ModelVersion, responses=problems.error_responses(404, 422))
async def delete_model(
    ctx: Ctx,
    ref: Annotated[str, Path(min_length=1, max_length=200, description="NAME:VERSION", examples=["wine-logreg:1"])],
    force: Annotated[bool, Query(description="delete it even while an alias points at it (the alias goes)")] = False,
) -> ModelVersion:
    """Delete one version (its file goes at the next garbage collection). Refused (422, field `ref`) while an
    alias points at it, unless `force`; answers with the version deleted."""
    return model_of(await ctx.controller.registry.delete(ref, force))
