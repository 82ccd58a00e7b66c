"""AgentService.Tasks, the agent's side: many WatchTask calls on one stream a controller keeps open.

A task sent as its own call costs both sides a call's set-up, headers, session check and end, several times the CPU
of the few messages a small task needs; here it costs a message. Each watch is WatchTask's own work (the callable
given), its messages passed on as they are (the journal's bytes, never decoded), its end an item with WatchTask's
status. Whatever items are ready when the stream writes go out in one response: a burst of tasks on an agent
answers in few messages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import grpc

from tensorfleet_agent._generated import agent_pb2 as pb
from tensorfleet_agent.core.errors import ValidationError

#: watches open on one stream at once; a caller beyond it is told so (a controller opens one per task it follows)
MAX_WATCHES = 100_000
#: items waiting for the stream's writer: the watches wait beyond it, so a caller that reads slowly holds them
#: back rather than the agent's memory growing
MAX_WAITING = 4096

Watch = Callable[[pb.WatchTaskRequest], AsyncIterator[bytes]]
StatusOf = Callable[[Exception], tuple[grpc.StatusCode, str]]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def item(watch_id: int, batch: bytes | None = None, end: bool = False, code: int = 0, details: str = "") -> bytes:
    """A TaskWatchItem as TasksResponse's field 1 (items), encoded by hand around a batch's serialized bytes: a
    journal's records go on the wire without being parsed and encoded again."""
    body = b"\x08" + _varint(watch_id)
    if batch is not None:
        body += b"\x12" + _varint(len(batch)) + batch
    if end:
        body += b"\x18\x01"
    if code:
        body += b"\x20" + _varint(code)
    if details:
        text = details.encode()
        body += b"\x2a" + _varint(len(text)) + text
    return b"\x0a" + _varint(len(body)) + body


class TaskStream:
    """One Tasks call: reads watches and unwatches, runs each watch in a task of its own, writes their items.

    `allowed` is asked for each request: a session that ended since the stream opened (unpaired, expired) gets
    its new watches refused as WatchTask would refuse the call (UNAUTHENTICATED); those already open run on."""

    def __init__(self, watch: Watch, status_of: StatusOf, allowed: Callable[[], bool]) -> None:
        self._watch = watch
        self._status_of = status_of
        self._allowed = allowed
        self._watches: dict[int, asyncio.Task[None]] = {}
        self._items: list[bytes] = []
        self._ready = asyncio.Event()  # items to write, or the stream's end to notice
        self._room = asyncio.Event()  # fewer than MAX_WAITING items wait
        self._room.set()
        self._closed = False  # the caller closed its side: no more watches

    async def serve(self, requests: AsyncIterator[pb.TasksRequest]) -> AsyncIterator[bytes]:
        """The call's responses: each the items ready at the time, concatenated (one TasksResponse)."""
        reader = asyncio.create_task(self._read(requests))
        try:
            while True:
                if self._items:
                    out = b"".join(self._items)
                    self._items.clear()
                    self._room.set()
                    yield out
                    continue
                if reader.done() and (reader.exception() is not None or not self._watches):
                    reader.result()  # a bad request ends the stream with its status
                    return
                self._ready.clear()
                await self._ready.wait()
        finally:
            reader.cancel()
            for task in list(self._watches.values()):
                task.cancel()

    async def _read(self, requests: AsyncIterator[pb.TasksRequest]) -> None:
        try:
            async for request in requests:
                for wid in request.unwatch:
                    task = self._watches.get(wid)
                    if task is not None:
                        task.cancel()
                if not request.watch:
                    continue
                allowed = self._allowed()
                for w in request.watch:
                    if w.id in self._watches:
                        raise ValidationError("watch.id", f"{w.id} is a watch open on this stream already")
                    if len(self._watches) >= MAX_WATCHES:
                        raise ValidationError("watch", f"at most {MAX_WATCHES} watches may be open on one stream")
                    if not allowed:
                        self._put(item(w.id, end=True, code=grpc.StatusCode.UNAUTHENTICATED.value[0],
                                       details="this controller's session ended: authenticate again"))  # fmt: skip
                        continue
                    self._watches[w.id] = asyncio.create_task(self._follow(w.id, w.request))
        finally:
            self._closed = True
            self._ready.set()

    async def _follow(self, wid: int, request: pb.WatchTaskRequest) -> None:
        try:
            async for batch in self._watch(request):
                if not self._room.is_set():
                    await self._room.wait()
                self._put(item(wid, batch))
            self._put(item(wid, end=True))
        except asyncio.CancelledError:  # unwatched, or the stream is over
            raise
        except Exception as exc:
            code, details = self._status_of(exc)
            self._put(item(wid, end=True, code=code.value[0], details=details))
        finally:
            with contextlib.suppress(KeyError):
                if self._watches[wid] is asyncio.current_task():
                    del self._watches[wid]
            self._ready.set()

    def _put(self, data: bytes) -> None:
        self._items.append(data)
        if len(self._items) >= MAX_WAITING:
            self._room.clear()
        self._ready.set()
