"""Jobs over HTTP: submit (the job-file fields, parsed by the core as gRPC SubmitJob's are), list with filters and
pages, one job and its tasks, and what a user asks of a job (cancel, pause, resume, retry, resubmit, delete). Each
route is one core call; the core's errors answer as problem documents (422 naming the field, 404, 409, 507)."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_desktop.controller import operations, principals
from tensorfleet_desktop.controller.http import problems
from tensorfleet_desktop.controller.http.context import HttpContext, context
from tensorfleet_desktop.controller.http.paging import DEFAULT_LIMIT, MAX_LIMIT, Page, paginate, paginate_index
from tensorfleet_desktop.controller.job_index import JobTable
from tensorfleet_desktop.controller.jobspec import MAX_SPEC_JSON
from tensorfleet_desktop.controller.model import Job, JobState, JobTask, TaskRunState
from tensorfleet_desktop.demo import DEMO_JOBS

router = APIRouter(tags=["jobs"])

Ctx = Annotated[HttpContext, Depends(context)]
JobId = Annotated[
    str,
    Path(min_length=1, max_length=100, description="a job id, or an unambiguous prefix of one (4 characters or more)"),
]
USER_HEADER = "X-TensorFleet-User"
DEFAULT_SUBMITTER = principals.HTTP_SUBMITTER  # reserved: no token or quota may take this name
MAX_SUBMITTER = 200  # what the core keeps of a submitter
MAX_FILTER = 200
DRAIN_LIMIT = 64 << 20  # an oversized body is read (and dropped) up to this, so its sender gets the 413

SEED_JOB = next(spec for spec in DEMO_JOBS if spec["algorithm"] == "logistic_regression")  # the example body
SPEC_BODY = {
    "required": True,
    "description": (
        "The job-file fields as a JSON object: what `tensorfleet submit -f job.yaml` sends (name, algorithm, "
        "dataset, dataset_params, hyperparameters, num_workers, epochs, gpus, priority, max_retries, timeout, "
        "constraints, sweep, model_name, cv, script, target, group, tags). The controller parses it with the "
        f"same rules as the gRPC SubmitJob; at most {MAX_SPEC_JSON} bytes."
    ),
    "content": {
        "application/json": {
            "schema": {"type": "object", "additionalProperties": True, "title": "JobSpec"},
            "example": SEED_JOB,
        }
    },
}
LOCATION = {"Location": {"description": "the job's URL (/api/v1/jobs/{id})", "schema": {"type": "string"}}}
RESUBMIT_BODY = {
    "required": False,
    "description": "Hyperparameters that replace the old job's (the others are kept); no body: an identical copy.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"params": {"type": "object", "additionalProperties": True, "title": "Params"}},
                "title": "ResubmitIn",
            },
            "example": {"params": {"C": 0.5}},
        }
    },
}


# ---- response models


class JobTaskCounts(BaseModel):
    total: int
    completed: int = Field(description="tasks that succeeded")
    failed: int = Field(description="tasks whose last attempt failed")
    attempts: int = Field(description="placements of all tasks together (retries and re-placements included)")


class JobModelRef(BaseModel):
    """The model version the job registered (model_name set, job SUCCEEDED)."""

    name: str
    version: int
    sha256: str


class JobOut(BaseModel):
    id: str
    name: str
    state: JobState
    progress: float = Field(ge=0.0, le=1.0)
    submitter: str
    created_at: float = Field(description="Unix time, seconds")
    started_at: float | None = Field(description="when its first task started (null: not yet)")
    finished_at: float | None = Field(description="when it ended (null: not yet)")
    queued_since: float | None = Field(description="when it last joined the queue")
    error: str = Field(description="why it failed or was cancelled")
    waiting: str = Field(description='why it waits for a placement, as a sentence ("" when nothing waits)')
    metrics: dict[str, float | None] = Field(description="the job's results (null: not a finite number)")
    spec: dict[str, Any] = Field(description="the normalised job spec, as the controller parsed it")
    algorithm: str
    dataset: str
    group: str
    tags: list[str]
    priority: int
    mode: str = Field(description='how its tasks relate: "" (one task), "gang", "cv", "sweep" or "shards"')
    tasks: JobTaskCounts
    agents: list[str] = Field(description="the agents its tasks run on now (names)")
    model: JobModelRef | None
    last_event_seq: int = Field(description="the sequence number of its latest event (Last-Event-ID of its events)")


class TaskOut(BaseModel):
    index: int = Field(description="the task's rank (a sweep: its trial number)")
    state: TaskRunState
    node_id: str = Field(description="the agent of its current or last attempt")
    agent: str = Field(description="that agent's name")
    attempt: int
    agent_task_id: str
    progress: float = Field(ge=0.0, le=1.0)
    failures: int = Field(description="failed attempts (spend max_retries)")
    replacements: int = Field(description="attempts lost with their agent (a separate budget)")
    exit_cause: str
    error: str
    params: dict[str, Any] | None = Field(description="a sweep trial's hyperparameters (null: the job's)")
    metrics: dict[str, float | None]
    started_at: float | None
    finished_at: float | None
    environment: dict[str, Any] | None = Field(description="a project task's environment (null: none)")
    dataset_transfer: dict[str, Any] | None = Field(
        default=None,
        description="how its dataset version got onto its agent: bytes_from_peers, bytes_from_controller, "
        "bytes_from_store, cached_bytes, seconds, peers_used, peer_failures (null: no dataset version)",
    )


class JobPage(BaseModel):
    items: list[JobOut]
    total: int = Field(description="jobs matching the filters")
    limit: int
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")
    page: int | None = Field(description="the page number, when asked by page")


class TaskList(BaseModel):
    job_id: str
    items: list[TaskOut]


# ---- conversions at the edge


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a number (a diverged loss) goes out as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _time(value: float) -> float | None:
    return value or None


def job_out(job: Job, names: dict[str, str]) -> JobOut:
    """A core Job as the API shows it; `names` maps agent node ids to names (HttpContext.agent_names())."""
    tags = job.spec.get("tags") or []
    running = [t.node_id for t in job.tasks if t.state.active and t.node_id]
    model = job.model
    return JobOut(
        id=job.id,
        name=job.name,
        state=job.state,
        progress=round(min(1.0, max(0.0, job.progress)), 4),
        submitter=job.submitter,
        created_at=job.created_at,
        started_at=_time(job.started_at),
        finished_at=_time(job.finished_at),
        queued_since=_time(job.queued_since),
        error=job.error,
        waiting=job.waiting if not job.state.terminal else "",
        metrics=_finite(dict(job.metrics)),
        spec=_finite(job.spec),
        algorithm=str(job.spec.get("algorithm", "")),
        dataset=str(job.spec.get("dataset", "")),
        group=str(job.spec.get("group", "")),
        tags=[str(t) for t in tags],
        priority=job.priority,
        mode=job.mode,
        tasks=JobTaskCounts(
            total=len(job.tasks),
            completed=sum(1 for t in job.tasks if t.state is TaskRunState.SUCCEEDED),
            failed=sum(1 for t in job.tasks if t.state is TaskRunState.FAILED),
            attempts=sum(t.attempt for t in job.tasks),
        ),
        agents=sorted({names.get(n, n) for n in running}),
        model=(
            JobModelRef(
                name=str(model.get("name", "")),
                version=int(model.get("version", 0)),
                sha256=str(model.get("sha256", "")),
            )
            if model
            else None
        ),
        last_event_seq=job.last_event_seq,
    )


def task_out(task: JobTask, names: dict[str, str]) -> TaskOut:
    return TaskOut(
        index=task.index,
        state=task.state,
        node_id=task.node_id,
        agent=names.get(task.node_id, ""),
        attempt=task.attempt,
        agent_task_id=task.agent_task_id,
        progress=1.0 if task.state is TaskRunState.SUCCEEDED else min(1.0, max(0.0, task.progress)),
        failures=task.failures,
        replacements=task.replacements,
        exit_cause=str(task.exit_cause),
        error=task.error,
        params=_finite(task.params) if task.params is not None else None,
        metrics=_finite(dict(task.metrics)),
        started_at=_time(task.started_at),
        finished_at=_time(task.finished_at),
        environment=_finite(task.environment) if task.environment else None,
        dataset_transfer=_finite(task.dataset_transfer) if task.dataset_transfer else None,
    )


# ---- request bodies


def _body_error(kind: str, loc: tuple[str | int, ...], message: str) -> RequestValidationError:
    """As FastAPI reports a body it could not take: a body that is not JSON answers 400, a wrong shape 422."""
    return RequestValidationError([{"type": kind, "loc": loc, "msg": message, "input": None}])


async def _json_body(request: Request, required: bool) -> dict[str, Any] | None:
    """The request's JSON object, read as it arrives and parsed by operations.parse_json_object (the rules gRPC's
    spec_json follows: size, nesting depth, UTF-8, JSON, an object). Past MAX_SPEC_JSON bytes nothing more is kept,
    and the 413 goes out once the body has been read to its end (its sender reads the answer, not a reset); past
    DRAIN_LIMIT at once, closing the connection. Empty: None unless `required`. A client that goes away mid-body
    sent no request (nothing is kept), not a controller error."""
    too_big = f"the request body is larger than {MAX_SPEC_JSON} bytes"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DRAIN_LIMIT:
        raise HTTPException(413, too_big, headers={"Connection": "close"})
    data, received = bytearray(), 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > DRAIN_LIMIT:
                raise HTTPException(413, too_big, headers={"Connection": "close"})
            if received <= MAX_SPEC_JSON:
                data += chunk
    except ClientDisconnect:
        raise ValidationError("body", "the client went away before the whole body arrived") from None
    if received > MAX_SPEC_JSON:
        raise HTTPException(413, too_big)
    if not data.strip():
        if required:
            raise _body_error("missing", ("body",), "Field required")
        return None
    try:
        return operations.parse_json_object(bytes(data), "body", MAX_SPEC_JSON)
    except operations.JsonSyntaxError as exc:  # not JSON at all: 400, as FastAPI answers such a body
        raise _body_error("json_invalid", ("body",), exc.message) from None


def _object(value: Any, loc: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _body_error("dict_type", loc, f"Input should be a JSON object, got {type(value).__name__}")
    return value


def _submitter(header: str | None) -> str:
    """A named token's name; with the controller's token, the user part of the header, else "http"."""
    who = principals.current()
    if who.named_token:
        return who.name
    return principals.user_of(header or "") or who.name or DEFAULT_SUBMITTER


def _location(request: Request, response: Response, job: Job) -> None:
    response.headers["Location"] = request.url_for("get_job", job_id=job.id).path


# ---- routes


@router.post(
    "/jobs",
    status_code=201,
    response_model=JobOut,
    summary="Submit a job",
    openapi_extra={"requestBody": SPEC_BODY},
    responses={
        201: {"description": "The job, queued", "headers": LOCATION},
        **problems.error_responses(400, 413, 422, 507),
    },
)
async def submit_job(
    request: Request,
    response: Response,
    ctx: Ctx,
    user: Annotated[
        str | None,
        Header(
            alias=USER_HEADER,
            max_length=MAX_SUBMITTER,
            pattern=r"^[ -~]*$",
            description=f'who submits (printable ASCII, at most {MAX_SUBMITTER} characters); default "http"',
        ),
    ] = None,
) -> JobOut:
    """The job-file fields, parsed and validated as the CLI's `submit -f` and gRPC SubmitJob are; the job is
    stored before it is queued, so a refused one leaves nothing behind."""
    body = await _json_body(request, required=True) or {}  # required: never None
    job = await ctx.controller.submit(body, _submitter(user))
    request.state.audit_target = job.id  # the audit log names the new job
    _location(request, response, job)
    return job_out(job, ctx.agent_names())


def _states(values: list[str]) -> tuple[str, ...]:
    """The `state` filter as the core's list_jobs takes it (JobState values), each checked."""
    states: set[str] = set()
    for value in values:
        try:
            states.add(JobState(value.strip().upper()).value)
        except ValueError:
            allowed = ", ".join(s.value for s in JobState)
            raise ValidationError("state", f"unknown job state {value[:40]!r} (one of {allowed})") from None
    return tuple(sorted(states))


def _key(job: Job) -> tuple[float, str]:
    return (job.created_at, job.id)


def index_page(table: JobTable, states: Collection[str], limit: int, cursor: str | None, page: int | None) -> Page[Job]:
    """A jobs page of these states (all: none given) read from the index (job_index.py), as `paginate` gives it of
    the sorted list: newest (created_at, id) first."""
    return paginate_index(
        table.count(states),
        _key,
        limit,
        cursor,
        page,
        at=lambda start, size: table.page(states, start, size),
        after=lambda key, size: table.after(states, key, size),
        everything=lambda: table.ordered(states),
    )


@router.get(
    "/jobs",
    response_model=JobPage,
    summary="List jobs",
    responses=problems.error_responses(422),
)
async def list_jobs(
    ctx: Ctx,
    state: Annotated[
        list[str] | None,
        Query(description="only jobs in these states (repeatable; any case): " + ", ".join(s.value for s in JobState)),
    ] = None,
    user: Annotated[str | None, Query(max_length=MAX_FILTER, description="only jobs of this submitter")] = None,
    label: Annotated[
        str | None, Query(max_length=MAX_FILTER, description="only jobs whose group is this, or that carry this tag")
    ] = None,
    name: Annotated[
        str | None, Query(max_length=MAX_FILTER, description="only jobs whose name contains this (any case)")
    ] = None,
    sweep: Annotated[bool | None, Query(description="true: only sweeps; false: no sweeps")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="jobs per page")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=1000, description="next_cursor of the page before (not with page)")
    ] = None,
    page: Annotated[int | None, Query(ge=1, description="the page number form, 1-based (not with cursor)")] = None,
) -> JobPage:
    """Newest first. A cursor continues after the last job a client saw, so jobs submitted meanwhile never push
    one onto the next page twice."""
    needle = (name or "").casefold()
    states, table = _states(state or []), ctx.controller.jobs  # the jobs in (created_at, id) order, by state
    if user is None and label is None and not needle and sweep is None:  # a page of the index: no scan, no sort
        chunk = index_page(table, states, limit, cursor, page)
    else:
        jobs = [  # newest (created_at, id) first, of these states; then HTTP's own filters
            j
            for j in table.ordered(states)
            if (user is None or j.submitter == user or principals.user_of(j.submitter) == user)
            and (label is None or j.spec.get("group") == label or label in (j.spec.get("tags") or ()))
            and (not needle or needle in j.name.casefold())
            and (sweep is None or bool(j.spec.get("sweep")) == sweep)
        ]
        chunk = paginate(jobs, _key, limit, cursor, page)
    names = ctx.agent_names()
    return JobPage(
        items=[job_out(j, names) for j in chunk.items],
        total=chunk.total,
        limit=chunk.limit,
        next_cursor=chunk.next_cursor,
        page=chunk.page,
    )


@router.get(
    "/jobs/{job_id}",
    name="get_job",
    response_model=JobOut,
    summary="Get a job",
    responses=problems.error_responses(404),
)
async def get_job(job_id: JobId, ctx: Ctx) -> JobOut:
    """Its state, progress, results and model: what `tensorfleet status` shows; poll it, or follow its events."""
    return job_out(ctx.controller.get(job_id), ctx.agent_names())


@router.get(
    "/jobs/{job_id}/tasks",
    response_model=TaskList,
    summary="List a job's tasks",
    responses=problems.error_responses(404),
)
async def job_tasks(job_id: JobId, ctx: Ctx) -> TaskList:
    """Each rank (fold, trial): where it runs, its attempt, failures, exit cause, params and environment."""
    job = ctx.controller.get(job_id)
    names = ctx.agent_names()
    return TaskList(job_id=job.id, items=[task_out(t, names) for t in job.tasks])


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a job",
    responses=problems.error_responses(404, 409),
)
async def cancel_job(job_id: JobId, ctx: Ctx) -> JobOut:
    """Stops its tasks on their agents; a job that already ended is a conflict (409)."""
    return job_out(ctx.controller.cancel(job_id), ctx.agent_names())


@router.post(
    "/jobs/{job_id}/pause",
    response_model=JobOut,
    summary="Pause a job",
    responses=problems.error_responses(404, 409),
)
async def pause_job(job_id: JobId, ctx: Ctx) -> JobOut:
    """A queued or running job stops taking agents (checkpointing workloads save one first) until resumed."""
    return job_out(ctx.controller.pause(job_id), ctx.agent_names())


@router.post(
    "/jobs/{job_id}/resume",
    response_model=JobOut,
    summary="Resume a paused job",
    responses=problems.error_responses(404, 409),
)
async def resume_job(job_id: JobId, ctx: Ctx) -> JobOut:
    """A paused job queues again (from its checkpoints, where it has some)."""
    return job_out(ctx.controller.resume(job_id), ctx.agent_names())


@router.post(
    "/jobs/{job_id}/retry",
    response_model=JobOut,
    summary="Retry a failed or cancelled job",
    responses=problems.error_responses(404, 409),
)
async def retry_job(job_id: JobId, ctx: Ctx) -> JobOut:
    """The same job queues again: its tasks that did not succeed run anew, with fresh retry budgets."""
    return job_out(ctx.controller.retry(job_id), ctx.agent_names())


@router.post(
    "/jobs/{job_id}/resubmit",
    status_code=201,
    response_model=JobOut,
    summary="Submit a copy of a job with changed hyperparameters",
    openapi_extra={"requestBody": RESUBMIT_BODY},
    responses={
        201: {"description": "The new job, queued", "headers": LOCATION},
        **problems.error_responses(400, 404, 413, 422, 507),
    },
)
async def resubmit_job(job_id: JobId, request: Request, response: Response, ctx: Ctx) -> JobOut:
    """A new job from the old one's spec, with `params` over its hyperparameters (as `tensorfleet resubmit`).
    The new job is the caller's: anyone who may submit may resubmit any job they can read, a colleague's too
    (the old job is not changed). Only an unnamed caller (the controller's token without a user) keeps the old
    job's submitter."""
    body = await _json_body(request, required=False)
    params = _object(body.get("params", {}), ("body", "params")) if body is not None else {}
    old, who = ctx.controller.get(job_id), principals.current()
    submitter = _submitter(None) if who.named_token or who.name else old.submitter  # the caller's, when named
    job = await ctx.controller.resubmit(old.id, params, submitter)
    _location(request, response, job)
    return job_out(job, ctx.agent_names())


@router.delete(
    "/jobs/{job_id}",
    response_model=JobOut,
    summary="Delete a job that has ended",
    responses=problems.error_responses(404, 409, 507),
)
async def delete_job(job_id: JobId, ctx: Ctx) -> JobOut:
    """Removes the job and its history (its registered model stays); a job still going is a conflict (409):
    cancel it first."""
    job = await ctx.controller.delete_job(job_id)
    return job_out(job, ctx.agent_names())
