"""AgentService.Tasks, the caller's side: the watches of one AgentClient on one stream (rpc/task_stream_agent.py has
why). Each watch reads as a WatchTask call would: its messages, then its end, a failure raised as that call's
AioRpcError. The stream failing fails every watch on it the same way, as a broken connection fails each call.

Watches and unwatches wait in an outbox for the stream's one writer, which sends all that are waiting in one
request: a burst of tasks to an agent goes in few messages."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from tensorfleet_agent._generated import agent_pb2 as pb

Metadata = tuple[tuple[str, str], ...]


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """The error a call with this status raises, for a failure found by hand (a watch's end, a wait's deadline)."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


def _broke(reason: object) -> grpc.aio.AioRpcError:
    """The stream broke under its watches: what a call on a dropped connection says, UNAVAILABLE (try again; the
    agent may or may not have had what was sent)."""
    return rpc_error(grpc.StatusCode.UNAVAILABLE, f"the task stream to the agent broke: {reason}")


class _Dropped(Exception):
    """A send the transport dropped (grpc's INTERNAL on a write): the call ended meanwhile, and grpc keeps no other
    status for it. Its cause is unknown: an agent restart (its sessions gone with it) or the agent refusing the
    stream's session as it opened, the refusal racing the first send (seen once in CI)."""


class Watch:
    """One watch's messages (TaskEventBatch) as they come; `next_message` as TaskEvents' own. Its stream and id are
    those of the stream it was last sent on (TaskStream.watch)."""

    stream: TaskStream

    def __init__(self, request: pb.WatchTaskRequest) -> None:
        self.request = request
        self.id = 0
        self.answered = False  # any item came: a session refusal is no longer renewed
        self.moved = False  # sent again on a new stream once already: a refusal now is its answer
        self.ended = False  # its end came, or the caller left it (an unwatch went)
        self._batches: collections.deque[Any] = collections.deque()
        self._error: grpc.aio.AioRpcError | None = None
        self._wake: asyncio.Future[None] | None = None

    def deliver(self, batch: Any | None, error: grpc.aio.AioRpcError | None = None, end: bool = False) -> None:
        if batch is not None:
            self._batches.append(batch)
        if error is not None:
            self._error, end = error, True
        if end:
            self.ended = True
        self.answered = True
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def next_message(self) -> Any | None:
        """The next TaskEventBatch; None at the watch's end; its failure raised."""
        while not self._batches:
            if self.ended:
                if self._error is not None:
                    raise self._error
                return None
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake
        return self._batches.popleft()

    def leave(self) -> None:
        """Stop following (the task runs on): an unwatch goes, unless its end came already."""
        if not self.ended:
            self.ended = True
            self.stream.unwatch(self)


class TaskStream:
    """One Tasks call, opened on the first watch with the session metadata `metadata()` gives. `renew()` drops
    the session: asked when the agent refused it (an agent restart, an expired session) before anything was
    answered, after which the watches go again once on a new stream (`reopen`)."""

    def __init__(
        self,
        start: Callable[[Metadata], Any],
        metadata: Callable[[], Awaitable[Metadata]],
        renew: Callable[[grpc.aio.AioRpcError], bool],
        reopen: Callable[[list[Watch]], None],
    ) -> None:
        self._start = start
        self._metadata = metadata
        self._renew = renew
        self._reopen = reopen
        self._watches: dict[int, Watch] = {}
        self._outbox: list[pb.TaskWatch] = []
        self._unwatch: list[int] = []
        self._next_id = 0
        self._wake: asyncio.Future[None] | None = None  # the writer's, while it waits for something to send
        self._runner: asyncio.Task[None] | None = None
        self.dead = False  # failed or closed: new watches go to a new stream

    def watch(self, watch: Watch) -> None:
        self._next_id += 1
        watch.id, watch.stream = self._next_id, self
        self._watches[watch.id] = watch
        self._outbox.append(pb.TaskWatch(id=watch.id, request=watch.request))
        self._kick()

    def unwatch(self, watch: Watch) -> None:
        if self._watches.pop(watch.id, None) is None:
            return
        if not self.dead:
            self._unwatch.append(watch.id)
            self._kick()
        elif not self._watches and self._runner is not None:  # replaced, and its last watch left: hang up
            self._runner.cancel()

    def close(self) -> None:
        self.dead = True
        if self._runner is not None:
            self._runner.cancel()
        self._fail(rpc_error(grpc.StatusCode.CANCELLED, "the agent's client closed"))

    def _kick(self) -> None:
        if self._runner is None:  # it sends what waits before it waits
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="agent-tasks-stream")
        else:
            self._poke()

    def _poke(self) -> None:
        """Wake the writer: one future resolved, where an Event's waiter task and asyncio.wait took a task and
        three loop turns per wake-up (a burst's watches each woke it)."""
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _run(self) -> None:
        call: Any = None
        reader: asyncio.Task[None] | None = None
        try:
            call = self._start(await self._metadata())
            reader = asyncio.create_task(self._read(call))
            reader.add_done_callback(lambda _: self._poke())
            loop = asyncio.get_running_loop()
            while not reader.done():
                if self._outbox or self._unwatch:
                    request = pb.TasksRequest(watch=self._outbox, unwatch=self._unwatch)
                    self._outbox, self._unwatch = [], []
                    try:
                        await call.write(request)
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() != grpc.StatusCode.INTERNAL:  # the call's own status (it had ended)
                            raise
                        raise _Dropped(exc.details()) from None  # grpc's word for a send the transport dropped
                    continue
                self._wake = loop.create_future()
                await self._wake
            await reader
        except grpc.aio.AioRpcError as exc:
            self._failed(exc)
        except _Dropped as exc:
            self._failed(_broke(exc), dropped=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a write on a call that ended: its reader has the reason, where it has one
            cause = reader.exception() if reader is not None and reader.done() and not reader.cancelled() else None
            self._failed(cause if isinstance(cause, grpc.aio.AioRpcError) else _broke(cause or exc))
        finally:
            self.dead = True
            if reader is not None:
                reader.cancel()
            if call is not None:
                call.cancel()

    async def _read(self, call: Any) -> None:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:  # type: ignore[attr-defined]  # (missing from the stubs)
                raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the agent ended the task stream")
            for it in msg.items:
                watch = self._watches.get(it.id)
                if watch is None:  # unwatched meanwhile
                    continue
                error = None
                if it.end:
                    del self._watches[it.id]
                    if it.code:
                        error = rpc_error(_codes.get(it.code, grpc.StatusCode.UNKNOWN), it.details)
                        if self._refused_session(watch, error):
                            continue
                watch.deliver(it.batch if it.HasField("batch") else None, error, it.end)
            if self.dead and not self._watches:  # a new stream has the new watches, and this one's are over
                return

    def _refused_session(self, watch: Watch, error: grpc.aio.AioRpcError) -> bool:
        """A watch refused for the session before any answer goes again once on a new stream, its session new."""
        if watch.answered or watch.moved or not self._renew(error):
            return False
        self.dead = True
        watch.moved = True
        self._reopen([watch])
        return True

    def _failed(self, error: grpc.aio.AioRpcError, dropped: bool = False) -> None:
        """The stream ended with `error`. Before any answer, a refused session (or a send dropped, which may have
        been one: _Dropped) has its watches sent once more on a new stream, with a new session."""
        self.dead = True
        waiting = [w for w in self._watches.values() if not w.answered and not w.moved]
        if waiting and len(waiting) == len(self._watches) and self._renew(_SESSION_GONE if dropped else error):
            self._watches.clear()
            for watch in waiting:
                watch.moved = True
            self._reopen(waiting)
            return
        self._fail(error)

    def _fail(self, error: grpc.aio.AioRpcError) -> None:
        watches, self._watches = list(self._watches.values()), {}
        for watch in watches:
            watch.deliver(None, error)


_codes = {code.value[0]: code for code in grpc.StatusCode}
_SESSION_GONE = rpc_error(grpc.StatusCode.UNAUTHENTICATED, "the task stream dropped before any answer")
