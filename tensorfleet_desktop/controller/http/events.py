"""A job's live events, metrics and logs over HTTP.

`GET /jobs/{id}/events` is a Server-Sent Events stream of the job's stored history and then its live events, from
the same replay-and-follow the gRPC WatchJob uses (`Controller.watch`). Every event carries its sequence number as
its SSE `id`, so a client that reconnects with `Last-Event-ID` (EventSource does) continues strictly after the last
event it saw: nothing lost, nothing twice. The stream is relayed as it is read (the controller's store is read a
page at a time), with a keep-alive comment after a quiet spell; a client that goes away ends its relay and the
watch under it. Metrics (JSON or CSV) and logs (JSON, CSV, or followed as SSE) are what `tensorfleet metrics` and
`tensorfleet logs` print, from the same operations the gRPC service calls."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Header, Query
from pydantic import BaseModel, Field
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_desktop.controller import operations
from tensorfleet_desktop.controller.core import Controller
from tensorfleet_desktop.controller.http import problems
from tensorfleet_desktop.controller.http.context import HttpContext, context
from tensorfleet_desktop.controller.http.jobs import JobId
from tensorfleet_desktop.controller.model import Job, JobEventRecord
from tensorfleet_desktop.controller.principals import Principal, Unauthenticated, current
from tensorfleet_desktop.controller.tokens import TokenBook, until_revoked

log = logging.getLogger(__name__)

router = APIRouter()

EVENT_STREAM = "text/event-stream"
CSV = "text/csv"
KEEPALIVE_SECONDS = 15.0  # a comment line after this long without an event: proxies keep the connection
RETRY_MS = 3000  # the reconnection delay an EventSource is told to use
RELAY_QUEUE = 2000  # records read ahead of a slow client, at most
CHUNK_EVENTS = 500  # events written to the socket in one go when they are already there (a replay)
MAX_SEQ = 2**63 - 1  # a sequence number the store can hold

_ENDED = object()  # the relay's mark: the stream of records is over

#: The SSE event name of each stored kind (an artifact whose kind is "checkpoint" goes out as `checkpoint`).
EVENT_NAMES = {
    "job_state": "state",
    "task_state": "task_state",
    "progress": "progress",
    "metric": "metric",
    "log": "log",
    "artifact": "artifact",
}

EVENTS_DOC = """\
A job's events as Server-Sent Events (`text/event-stream`): its stored history, then its live events until the job
ends. Each event has `id:` (its sequence number), `event:` (its type) and `data:` (one JSON object: `job_id`,
`seq`, `time` (epoch seconds), `kind` (= the event type), `task_index` (null for the job) and the type's fields):

- `state`: the job changed state: `state` (QUEUED, RUNNING, PAUSED, SUCCEEDED, FAILED, CANCELLED), `message`
- `task_state`: a task changed state: `state`, `message`
- `progress`: a task's progress: `fraction` (0..1)
- `metric`: a metric point: `name`, `step`, `value` (null if not finite), `wall_time`
- `log`: a log line: `stream` (stdout, stderr), `line`
- `checkpoint`: a checkpoint was saved: `name`, `sha256`, `size`, `step`
- `artifact`: an artifact was saved: `name`, `artifact_kind`, `sha256`, `size`
- `end` (no `id`): the stream is over: `job_id`, `state` (the job's state now), `last_seq`. It follows the job's
  terminal `state` event; with `follow=false` it ends the history. An EventSource should `close()` on it (it
  would reconnect otherwise).
- `error` (no `id`): the controller could not go on reading; reconnect with `Last-Event-ID` to resume.

Resume after a dropped connection with the `Last-Event-ID` header (or `after=SEQ` for clients that cannot set
headers; the header wins): the stream continues strictly after that sequence number, with no gap and no event
twice. A comment line (`: keep-alive`) goes out after 15 s without an event.
"""

#: One server-sent event as its fields (OpenAPI 3.1 tools, schemathesis among them, check each event against this);
#: `data` is the JSON object described above.
SSE_CONTENT: dict[str, Any] = {
    "schema": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "the event's seq (send it back as Last-Event-ID)"},
            "event": {"type": "string", "description": "the event type"},
            "data": {"type": "string", "description": "one JSON object"},
            "retry": {"type": "integer"},
        },
        "required": ["data"],
    }
}

SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the events, as they happen (text/event-stream)",
        "content": {EVENT_STREAM: SSE_CONTENT},
    }
}


# ---------------------------------------------------------------- request parameters


def _resume_point(last_event_id: str | None, after: int | None) -> int:
    """The seq a stream starts after: the `Last-Event-ID` header (what an EventSource sends when it reconnects,
    so it wins over a query the first URL carried), else `after`, else 0 (the whole history)."""
    text = (last_event_id or "").strip()
    if not text:
        return after or 0
    if len(text) > 20 or not text.isdigit() or int(text) > MAX_SEQ:
        raise ValidationError("Last-Event-ID", f"must be an event's id (a sequence number >= 0), got {text[:40]!r}")
    return int(text)


LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="the id of the last event received: the stream continues strictly after it",
        max_length=100,
    ),
]
After = Annotated[
    int | None,
    Query(ge=0, le=MAX_SEQ, description="the sequence number to continue after (Last-Event-ID wins when both)"),
]


def _wants_csv(fmt: str | None, accept: str | None) -> bool:
    if fmt is not None:
        return fmt == "csv"
    return CSV in (accept or "").lower()


# ---------------------------------------------------------------- SSE


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def event_of(record: JobEventRecord) -> tuple[str, dict[str, Any]]:
    """A stored record as (SSE event name, JSON object)."""
    name = EVENT_NAMES.get(record.kind, record.kind)
    if record.kind == "artifact" and record.state == "checkpoint":  # the record keeps the artifact kind in `state`
        name = "checkpoint"
    data: dict[str, Any] = {
        "job_id": record.job_id,
        "seq": record.seq,
        "time": record.time,
        "kind": name,
        "task_index": record.task_index if record.task_index >= 0 else None,
    }
    if record.kind in ("job_state", "task_state"):
        data |= {"state": record.state, "message": record.message}
    elif record.kind == "progress":
        data["fraction"] = _finite(record.value)
    elif record.kind == "metric":
        data |= {"name": record.name, "step": record.step, "value": _finite(record.value),
                 "wall_time": record.wall_time}  # fmt: skip
    elif record.kind == "log":
        data |= {"stream": record.stream, "line": record.message}
    elif name == "checkpoint":  # sha256 in `message`, size in `value`
        data |= {"name": record.name, "sha256": record.message, "size": int(record.value), "step": record.step}
    elif record.kind == "artifact":
        data |= {"name": record.name, "artifact_kind": record.state, "sha256": record.message,
                 "size": int(record.value)}  # fmt: skip
    return name, data


def sse_frame(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    """One event: compact JSON on one `data:` line (JSON escapes every newline a log line may hold)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return f"{head}event: {event}\ndata: {body}\n\n"


async def _relay(records: AsyncGenerator[JobEventRecord, None], job: Job, after: int) -> AsyncIterator[bytes]:
    """The records as SSE, written as they come: what is already there goes out in one write (up to
    CHUNK_EVENTS events), a keep-alive comment after KEEPALIVE_SECONDS of silence, `end` when the records are
    over. The records are read by a task of their own, ahead of the client by at most RELAY_QUEUE; when the client
    goes (this generator is closed or cancelled), that task is cancelled and the watch under it closed."""
    queue: asyncio.Queue[Any] = asyncio.Queue(RELAY_QUEUE)

    async def pump() -> None:
        try:
            async with contextlib.aclosing(records) as stream:
                async for record in stream:
                    await queue.put(record)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # said to the client as an `error` event, which ends the stream
            log.exception("job %s: the event stream failed", job.id)
            await queue.put(exc)
        else:
            await queue.put(_ENDED)

    task = asyncio.create_task(pump(), name=f"http-events-{job.id}")
    last = after
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            frames: list[str] = []
            while isinstance(item, JobEventRecord):
                name, data = event_of(item)
                frames.append(sse_frame(name, data, item.seq))
                last = item.seq
                if len(frames) >= CHUNK_EVENTS or queue.empty():
                    item = None
                    break
                item = queue.get_nowait()
            if frames:
                yield "".join(frames).encode()
            if item is _ENDED:  # last_seq: the job's, when it has none past an `after` beyond them
                end = {"job_id": job.id, "state": job.state.value, "last_seq": min(last, job.last_event_seq)}
                yield sse_frame("end", end).encode()
                return
            if isinstance(item, Exception):
                message = f"the controller could not read the job's events ({type(item).__name__}: {item})"
                last = min(last, job.last_event_seq)
                yield sse_frame("error", {"job_id": job.id, "detail": message, "last_seq": last}).encode()
                return
    finally:
        task.cancel()  # nothing awaited here: this also runs when the client's connection is cancelled


async def _followed(
    c: Controller, job: Job, after: int, keep: Callable[[JobEventRecord], bool]
) -> AsyncGenerator[JobEventRecord, None]:
    """The job's history after `after`, then its live events until it ends (Controller.watch), those `keep`
    accepts."""
    watch = cast(AsyncGenerator[JobEventRecord, None], c.watch(job.id, after))
    async with contextlib.aclosing(watch) as records:
        async for record in records:
            if keep(record):
                yield record


async def _history(c: Controller, job: Job, after: int) -> AsyncGenerator[JobEventRecord, None]:
    """The job's stored events after `after` up to the last one it has now (the replay half of Controller.watch)."""
    history = cast(AsyncGenerator[JobEventRecord, None], c.history(job.id, after))
    async with contextlib.aclosing(history) as records:
        async for record in records:
            yield record


class EventStreamResponse(StreamingResponse):
    """A Server-Sent Events response: never cached, never buffered by a proxy (nginx's X-Accel-Buffering), and its
    body generator closed however the response ends (a client that went away mid-write included)."""

    media_type = EVENT_STREAM

    def __init__(self, content: AsyncGenerator[bytes, None], status_code: int = 200) -> None:
        super().__init__(
            content,
            status_code,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._events = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()


def _stream(records: AsyncGenerator[JobEventRecord, None], job: Job, after: int) -> EventStreamResponse:
    return EventStreamResponse(cast(AsyncGenerator[bytes, None], _relay(records, job, after)))


def _all(record: JobEventRecord) -> bool:
    return True


@router.get(
    "/jobs/{job_id}/events",
    tags=["events"],
    summary="Follow a job's events (Server-Sent Events)",
    description=EVENTS_DOC,
    response_class=EventStreamResponse,
    responses={**SSE_RESPONSE, **problems.error_responses(404, 422)},
)
async def job_events(
    job_id: JobId,
    ctx: Annotated[HttpContext, Depends(context)],
    last_event_id: LastEventId = None,
    after: After = None,
    follow: Annotated[bool, Query(description="false: the stored history, then the stream ends")] = True,
) -> Response:
    """Dashboards, notebooks and scripts follow a job live without polling, and resume where they were."""
    start = _resume_point(last_event_id, after)
    job = ctx.controller.get(job_id)
    c = ctx.controller
    records = _followed(c, job, start, _all) if follow else _history(c, job, start)
    return _stream(_while_token_valid(records, ctx, current()), job, start)


async def _while_token_valid(
    records: AsyncGenerator[JobEventRecord, None], ctx: HttpContext, principal: Principal
) -> AsyncGenerator[JobEventRecord, None]:
    """The records until the named token that opened the stream is revoked: then the stream ends (a client that
    reconnects is refused), even while the job sends nothing."""
    tokens: TokenBook | None = ctx.tokens
    with tokens.revocation(principal) if tokens is not None else contextlib.nullcontext(None) as revoked:
        source = records if revoked is None else until_revoked(records, revoked, principal.name)
        with contextlib.suppress(Unauthenticated):
            async for record in source:
                yield record


# ---------------------------------------------------------------- metrics


class MetricPoint(BaseModel):
    name: str
    step: int
    value: float | None = Field(description="null when not finite (the CSV form has inf)")
    wall_time: float = Field(description="epoch seconds the task measured it at")
    task_index: int
    seq: int = Field(description="the event's sequence number (the `id` of its SSE event)")
    agent_task_id: str = Field(description="the attempt that reported it")


class MetricsResponse(BaseModel):
    points: list[MetricPoint]


METRIC_COLUMNS = ("task_index", "step", "name", "value", "wall_time")  # `tensorfleet metrics --csv`'s
LOG_COLUMNS = ("task_index", "time", "stream", "line")  # `tensorfleet logs --csv`'s


def _csv_lines(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """CSV written a few hundred rows at a time (values as they are; floats as Python writes them)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for i, row in enumerate(rows, 1):
        writer.writerow(row)
        if i % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


async def _iterate(lines: Iterator[str]) -> AsyncIterator[str]:
    for line in lines:
        yield line
        await asyncio.sleep(0)  # a big CSV does not hold the loop


def _csv_response(header: Sequence[str], rows: Iterable[Sequence[Any]], filename: str) -> StreamingResponse:
    return StreamingResponse(
        _iterate(_csv_lines(header, rows)),
        media_type=f"{CSV}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


JSON_CHUNK = 500  # items encoded in one go (by C's json encoder); the loop gets a turn after each chunk


def _json_response(
    field: str, rows: Sequence[JobEventRecord], item: Callable[[JobEventRecord], dict[str, Any]]
) -> StreamingResponse:
    """`{"<field>": [item(row), ...]}` written a chunk of rows at a time, as the CSV form is: a job's 200,000
    metric points neither hold the loop for a second nor are built, validated and copied whole by FastAPI (the
    route's response_model documents this shape)."""

    async def chunks() -> AsyncIterator[bytes]:
        yield f'{{"{field}":['.encode()
        for start in range(0, len(rows), JSON_CHUNK):
            items = [item(r) for r in rows[start : start + JSON_CHUNK]]
            text = json.dumps(items, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            yield (("," if start else "") + text[1:-1]).encode()
            await asyncio.sleep(0)
        yield b"]}"

    return StreamingResponse(chunks(), media_type="application/json")


def _metric_point(r: JobEventRecord) -> dict[str, Any]:
    """A stored metric point as MetricPoint (no number that is not finite: JSON has none)."""
    return {"name": r.name, "step": r.step, "value": _finite(r.value), "wall_time": _finite(r.wall_time),
            "task_index": r.task_index, "seq": r.seq, "agent_task_id": r.attempt_id}  # fmt: skip


def _log_line(r: JobEventRecord) -> dict[str, Any]:
    """A stored log line as LogLine."""
    return {"task_index": r.task_index, "time": _finite(r.time), "stream": r.stream, "line": r.message, "seq": r.seq}


def _csv_content(description: str) -> dict[str, Any]:
    return {CSV: {"schema": {"type": "string"}, "example": description}}


@router.get(
    "/jobs/{job_id}/metrics",
    tags=["metrics"],
    summary="A job's metric points (JSON or CSV)",
    response_model=MetricsResponse,
    responses={
        200: {"content": _csv_content(",".join(METRIC_COLUMNS) + "\r\n0,0,loss,0.5,1700000000.0\r\n")},
        **problems.error_responses(404, 422),
    },
)
async def job_metrics(
    job_id: JobId,
    ctx: Annotated[HttpContext, Depends(context)],
    name: Annotated[list[str], Query(max_length=100, description="only these metrics (repeatable)")] = [],  # noqa: B006
    format: Annotated[Literal["json", "csv"] | None, Query(description="csv, or Accept: text/csv")] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """Every metric point the job stored, in order: what `tensorfleet metrics` prints, for plots and notebooks."""
    rows = await operations.metric_rows(ctx.controller, job_id, set(name))
    if _wants_csv(format, accept):
        job = ctx.controller.get(job_id)
        cells = ((r.task_index, r.step, r.name, r.value, r.wall_time) for r in rows)
        return _csv_response(METRIC_COLUMNS, cells, f"{job.id}-metrics.csv")
    return _json_response("points", rows, _metric_point)


# ---------------------------------------------------------------- logs


class LogLine(BaseModel):
    task_index: int
    time: float = Field(description="epoch seconds")
    stream: str = Field(description="stdout or stderr")
    line: str
    seq: int = Field(description="the event's sequence number (the `id` of its SSE event)")


class LogsResponse(BaseModel):
    lines: list[LogLine]


async def _log_rows(c: Controller, job_id: str, task: int | None) -> list[JobEventRecord]:
    try:
        return await operations.log_rows(c, job_id, task)
    except ValidationError as exc:  # the rule's own message, named as this API's parameter
        if exc.field != "task_index":
            raise
        raise ValidationError("task", exc.message) from None


@router.get(
    "/jobs/{job_id}/logs",
    tags=["logs"],
    summary="A job's log lines (JSON, CSV, or followed live)",
    response_model=LogsResponse,
    responses={
        200: {
            "content": {
                **_csv_content(",".join(LOG_COLUMNS) + "\r\n0,1700000000.0,stdout,epoch 1\r\n"),
                EVENT_STREAM: SSE_CONTENT,
            }
        },
        **problems.error_responses(404, 422),
    },
)
async def job_logs(
    job_id: JobId,
    ctx: Annotated[HttpContext, Depends(context)],
    task: Annotated[int | None, Query(ge=0, le=1_000_000, description="only this task's lines")] = None,
    follow: Annotated[
        bool,
        Query(description="stream the lines (stored, then new ones) as Server-Sent Events `log` until the job ends"),
    ] = False,
    format: Annotated[Literal["json", "csv"] | None, Query(description="csv, or Accept: text/csv")] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
    last_event_id: LastEventId = None,
    after: After = None,
) -> Response:
    """What `tensorfleet logs` prints. With `follow=true`, a `tail -f`: the stored lines, then each new line as an SSE
    `log` event (data as in the events stream; `id` is its sequence number, so `Last-Event-ID` resumes it), then
    `end` when the job ends."""
    c = ctx.controller
    if follow:
        start = _resume_point(last_event_id, after)
        job = c.get(job_id)
        if task is not None and not 0 <= task < len(job.tasks):
            await _log_rows(c, job.id, task)  # refused there, in the words `tensorfleet logs --task` prints

        def keep(record: JobEventRecord) -> bool:
            return record.kind == "log" and (task is None or record.task_index == task)

        return _stream(_followed(c, job, start, keep), job, start)
    rows = await _log_rows(c, job_id, task)
    if _wants_csv(format, accept):
        job = c.get(job_id)
        cells = ((r.task_index, r.time, r.stream, r.message) for r in rows)
        return _csv_response(LOG_COLUMNS, cells, f"{job.id}-logs.csv")
    return _json_response("lines", rows, _log_line)
