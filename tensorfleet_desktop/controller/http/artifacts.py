"""A job's artifacts over HTTP: the list gRPC ListArtifacts gives (models, checkpoints, reports, a project's
outputs) and each one's download, picked as DownloadArtifact picks it (`task_index` when several tasks saved
the name, `attempt` for an older attempt's), streamed with its sha256 in the headers and HTTP Range."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from tensorfleet_desktop.controller.http import problems
from tensorfleet_desktop.controller.http.context import HttpContext, context
from tensorfleet_desktop.controller.http.files import download_responses, file_response
from tensorfleet_desktop.controller.http.paging import DEFAULT_LIMIT, MAX_LIMIT, paginate
from tensorfleet_desktop.controller.model import ArtifactInfo

router = APIRouter(tags=["artifacts"])

Ctx = Annotated[HttpContext, Depends(context)]
JobId = Annotated[str, Path(min_length=1, max_length=100, description="a job id, or an unambiguous prefix of one")]
MAX_FILTER = 200


class Artifact(BaseModel):
    name: str = Field(description="as the task saved it (the download route's {name})")
    kind: str = Field(description="model, checkpoint, report, metrics, output, ...")
    size: int = Field(description="bytes")
    sha256: str
    task_index: int = Field(description="the task that saved it; -1: the controller (a merged model)")
    step: int = Field(description="a checkpoint's epoch or step")
    attempt: int = Field(description="the task's attempt that saved it; 0: the controller's, or recorded before")
    created_at: float = Field(description="unix time the controller heard of it; 0: recorded before it was kept")


class ArtifactPage(BaseModel):
    job_id: str
    items: list[Artifact] = Field(description="newest first")
    total: int
    limit: int
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")
    page: int | None = Field(description="the page number, when asked by page")


def artifact_of(a: ArtifactInfo) -> Artifact:
    return Artifact(
        name=a.name,
        kind=a.kind,
        size=a.size,
        sha256=a.sha256,
        task_index=a.task_index,
        step=a.step,
        attempt=a.attempt,
        created_at=a.created_at,
    )


def _key(a: Artifact) -> tuple[float, str, int, int, int, str]:
    """Newest first; unique per artifact (old checkpoints are trimmed, so a position would not do)."""
    return (a.created_at, a.name, a.task_index, a.attempt, a.step, a.sha256)


@router.get("/jobs/{job_id}/artifacts", response_model=ArtifactPage, responses=problems.error_responses(404, 422))
async def list_artifacts(
    ctx: Ctx,
    job_id: JobId,
    kind: Annotated[str | None, Query(max_length=MAX_FILTER, description="only artifacts of this kind")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="artifacts per page")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=1000, description="next_cursor of the page before (not with page)")
    ] = None,
    page: Annotated[int | None, Query(ge=1, description="the page number form, 1-based (not with cursor)")] = None,
) -> ArtifactPage:
    """What the job's tasks saved (and the controller made of them), each with its size and sha256: what
    `tensorfleet artifacts list` shows."""
    job = ctx.controller.get(job_id)
    items = sorted((artifact_of(a) for a in job.artifacts if kind in (None, a.kind)), key=_key, reverse=True)
    chunk = paginate(items, _key, limit, cursor, page)
    return ArtifactPage(
        job_id=job.id,
        items=chunk.items,
        total=chunk.total,
        limit=chunk.limit,
        next_cursor=chunk.next_cursor,
        page=chunk.page,
    )


@router.get(
    "/jobs/{job_id}/artifacts/{name:path}",
    response_class=Response,
    responses={**download_responses(), **problems.error_responses(404, 409, 416, 422, 500)},
)
@router.head(
    "/jobs/{job_id}/artifacts/{name:path}",
    response_class=Response,
    responses={**download_responses(), **problems.error_responses(404, 409, 416, 422, 500)},
)
async def download_artifact(
    ctx: Ctx,
    request: Request,
    job_id: JobId,
    name: Annotated[str, Path(min_length=1, max_length=1000, description="the artifact's name, as listed")],
    task_index: Annotated[
        int | None, Query(ge=-1, description="the task that saved it, when several tasks saved this name")
    ] = None,
    attempt: Annotated[int | None, Query(ge=0, description="that attempt's copy (default: the latest)")] = None,
) -> Response:
    """The artifact's file, streamed after a check against its sha256 (copied again from its agent when the
    controller's copy is missing or damaged), the sha256 in `X-Checksum-Sha256`, `Repr-Digest` and `ETag`;
    resumable with `Range`. 409 while its agent has not delivered it yet."""
    job, artifact = ctx.controller.artifact(job_id, name, task_index, attempt)
    path = await ctx.controller.artifact_path(job, artifact)
    headers = {
        "X-Artifact-Kind": artifact.kind,
        "X-Artifact-Task-Index": str(artifact.task_index),
        "X-Artifact-Attempt": str(artifact.attempt),
    }
    return file_response(
        request,
        path,
        filename=artifact.name.rsplit("/", 1)[-1] or "artifact",
        media_type="application/octet-stream",
        sha256=artifact.sha256,
        size=artifact.size,
        headers=headers,
    )
