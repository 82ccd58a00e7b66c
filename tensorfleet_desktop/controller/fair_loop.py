"""Clients first on a busy loop: what serves a client call (a gRPC call, an HTTP request) runs ahead of the bulk work
that keeps the controller's asyncio loop busy while a queue drains (agent events, passes, store writes), and a
loop turn runs at most `BULK_PER_TURN` bulk callbacks.

asyncio runs its ready callbacks first in, first out, all of one turn before it polls again, and each step of a
call waits for the callbacks queued before it: during a 10,000-job drain a turn held 100-180 callbacks (10-50 ms
on a loaded 2-core box), a ListJobs call needs ~10 turns and an HTTP GET ~3, so a page took 140-180 ms over gRPC
and 50-100 ms over HTTP for ~1 ms of its own work. Here the ready queue has two lanes:
- first: the selector's events (a socket's bytes to read or room to write; the gRPC completion queue's callback,
  which hands finished operations to their futures), the steps of a client task (the task of a gRPC call, from its
  first step; of an HTTP request, which its bytes create; the tasks the gRPC server creates for a new call), in
  their order;
- then bulk: every other callback, in its order, at most BULK_PER_TURN a turn, so the poll between two steps of a
  call comes soon.

Nothing runs off the loop: a page is still read in one callback on the loop, as consistent as it ever was; only
the order of ready callbacks changes, and none is dropped. Tasks a client task creates are bulk (the work a call
starts is not the call), except a relay's: grpc.aio's server makes a task per call that makes the call's own task,
which would otherwise wait in the bulk lane (64 callbacks a turn, behind hundreds while a queue drains) for its
first step, its interceptors. A gRPC server marks its tasks and its relays by name (app.py's `clients_first`) and
its calls with `serve_first` in an interceptor (`ClientsFirst`; the core imports no gRPC). On a loop this does not
know (not CPython's `BaseEventLoop`: uvloop), `install` does nothing.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import weakref
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import Any

log = logging.getLogger(__name__)

BULK_PER_TURN = 64  # bulk callbacks one loop turn runs; the rest wait for the next turn, after a poll


def _is_io(callback: Any) -> bool:
    """A selector event's callback: a transport's read or write (an HTTP request's bytes; it creates the request's
    task), or the gRPC completion queue's reader (it hands finished operations to their futures). Not a transport's
    other callbacks: `_add_reader` is queued after `connection_made`, and must stay after it."""
    if isinstance(callback, functools.partial):
        return getattr(callback.func, "__name__", "") == "_handle_events"
    return isinstance(getattr(callback, "__self__", None), asyncio.BaseTransport) and getattr(
        callback, "__name__", ""
    ) in ("_read_ready", "_write_ready")


class _Ready(collections.deque):  # type: ignore[type-arg]
    """A loop's ready queue in two lanes. Its length is what `BaseEventLoop._run_once` runs in one turn (it asks
    just before): the first-lane callbacks queued then and at most BULK_PER_TURN bulk ones; what is queued during
    the turn waits for the next (a client task never starves the bulk work, nor the poll)."""

    def __init__(self, handles: Iterable[asyncio.Handle] = ()) -> None:
        super().__init__()
        self.clients: set[asyncio.Task[Any]] = set()  # tasks serving a client call, while they run
        self.spawners: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()  # their tasks serve clients (servers)
        self.relay: Callable[[asyncio.Task[Any]], bool] = lambda task: False  # a spawner's task that spawns in turn
        self.lane: collections.deque[asyncio.Handle] = collections.deque()
        self.in_io = False  # the callback running now is an I/O one (the tasks it creates serve clients)
        self.quota = (0, 0)  # first-lane and bulk callbacks left to this turn
        for handle in handles:
            self.append(handle)

    def first(self, handle: asyncio.Handle) -> bool:
        callback = handle._callback  # type: ignore[attr-defined]
        owner = getattr(callback, "__self__", None)  # a task's step or wakeup: the task
        return (isinstance(owner, asyncio.Task) and owner in self.clients) or _is_io(callback)

    def append(self, handle: asyncio.Handle) -> None:
        if self.first(handle):
            self.lane.append(handle)
        else:
            super().append(handle)

    def popleft(self) -> asyncio.Handle:
        first, bulk = self.quota
        if self.lane and (first > 0 or bulk <= 0 or not super().__len__()):
            self.quota = (first - 1, bulk)
            handle = self.lane.popleft()
            self.in_io = _is_io(handle._callback)  # type: ignore[attr-defined]
        else:  # append put every I/O callback in the first lane
            self.quota = (first, bulk - 1)
            handle = super().popleft()
            self.in_io = False
        return handle

    def __len__(self) -> int:
        self.quota = (len(self.lane), min(super().__len__(), BULK_PER_TURN))
        return sum(self.quota)

    def clear(self) -> None:
        self.lane.clear()
        super().clear()

    def serve(self, task: asyncio.Task[Any]) -> None:
        """`task` serves a client until it is done; its step already queued moves to the first lane."""
        if task in self.clients or task.done():
            return
        self.clients.add(task)
        task.add_done_callback(self.clients.discard)
        queued = super().__len__()
        for i in range(queued - 1, max(-1, queued - 17), -1):  # a new task's first step: the last one queued
            handle = self[i]
            if getattr(handle._callback, "__self__", None) is task:
                del self[i]
                self.lane.append(handle)
                return

    def created(self, task: asyncio.Task[Any], by: asyncio.Task[Any] | None) -> None:
        if (by is None and self.in_io) or (by is not None and by in self.spawners):
            self.serve(task)
            if by is not None and self.relay(task):  # it makes the call's own task: that one serves a client too
                self.spawners.add(task)


def _ready_of(loop: asyncio.AbstractEventLoop) -> _Ready | None:
    ready = getattr(loop, "_ready", None)
    return ready if isinstance(ready, _Ready) else None


def install(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """Give the running loop (or `loop`) the two-lane ready queue and a task factory that lanes the tasks servers
    create; False where the loop is not one it knows, or already has a task factory."""
    loop = loop or asyncio.get_running_loop()
    old = getattr(loop, "_ready", None)
    if isinstance(old, _Ready):
        return True
    if type(old) is not collections.deque or loop.get_task_factory() is not None:
        log.debug("loop %r: no clients-first ready queue", loop)
        return False
    ready = _Ready()
    loop._ready = ready  # type: ignore[attr-defined]

    def move() -> None:  # what was ready, and what another thread appended to the old queue as it was replaced
        while old:
            ready.append(old.popleft())

    def factory(
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        **kwargs: Any,  # context; and name, eager_start... where the Python version passes them (3.13.3, 3.14)
    ) -> asyncio.Task[Any]:
        by = asyncio.current_task(loop)
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        ready.created(task, by)
        return task

    move()
    loop.call_soon(move)
    loop.call_later(1.0, move)
    loop.set_task_factory(factory)
    return True


def serve_first(task: asyncio.Task[Any] | None = None) -> None:
    """The current task (or `task`) serves a client: its callbacks run first until it is done."""
    task = task or asyncio.current_task()
    ready = _ready_of(task.get_loop()) if task is not None else None
    if task is not None and ready is not None:
        ready.serve(task)


def servers(tasks: Iterable[asyncio.Task[Any]], relay: Callable[[asyncio.Task[Any]], bool] | None = None) -> None:
    """These tasks accept calls (a gRPC server's): they, and each task they create (a call's), serve clients; so
    do the tasks that a task they create and `relay` names creates in turn (grpc.aio's task per call, which makes
    the call's own)."""
    for task in tasks:
        ready = _ready_of(task.get_loop())
        if ready is not None:
            ready.spawners.add(task)
            ready.serve(task)
            if relay is not None:
                ready.relay = relay


def asgi_first(app: Any) -> Any:
    """HTTP: an ASGI app whose request tasks are served first."""

    async def first(scope: Any, receive: Any, send: Any) -> None:
        serve_first()
        await app(scope, receive, send)

    return first
