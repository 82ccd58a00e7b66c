"""The only way the window talks to the controller (docs/architecture.md, 'Processes and who dials whom').

An asyncio loop in its own thread owns the gRPC client; `Bridge` lives in the GUI thread and re-emits
everything as queued Qt signals, so no slot ever waits on the network. Calls go in with `call()`,
results come back to a callback in the GUI thread.

The followed job's events are collected on the asyncio thread and go out as one `job_batch` (numpy arrays per
series, see job_history) at most BATCH_SECONDS apart: a replayed history of 100k points is a handful of signals,
not one per message. `stop()` cancels and awaits every task the bridge started, so closing leaves none pending.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal, Slot

from tensorfleet_desktop.client import (
    DEFAULT_CONTROLLER,
    TERMINAL,
    AsyncClient,
    ControllerUnreachable,
    TensorFleetError,
)
from tensorfleet_desktop.local_cluster import StartFailed, answers, connect_or_start
from tensorfleet_desktop.project import ProjectError
from tensorfleet_desktop.ui.job_history import BatchBuilder, JobBatch

log = logging.getLogger(__name__)
JOB_LIST_LIMIT = 500  # the newest jobs the window lists
ClientCall = Callable[[AsyncClient], Awaitable[Any]]
RESUBSCRIBE_SECONDS = 0.5  # the wait before following a still-running job again after its stream ended
BATCH_SECONDS = 0.1  # the followed job's events go to the GUI at most this often (the first after a pause at once)


class Bridge(QObject):
    connected = Signal(object)  # {"address", "message", "info", "started"}
    disconnected = Signal(str)  # why; the window shows a banner and keeps reconnecting
    # Python objects cross threads as they are: a Signal(list) or Signal(dict) converts the whole job list to
    # QVariants and back (3.5 ms of the GUI thread per delivery, ten a second while a job streams)
    jobs_changed = Signal(object)  # list: every job known, newest first, after each change WatchJobs streams
    job_finished = Signal(object)  # dict: a job seen unfinished (or first seen in a change) reached a final state
    agents_changed = Signal(object)  # list
    agent_event = Signal(object)  # dict {"kind", "time", "agent"} as WatchAgents streams them
    job_batch = Signal(str, object)  # (job_id, JobBatch): what arrived for the job `watch_job` follows
    failed = Signal(str)  # a call without its own error handler failed
    _deliver = Signal(object, object, object)
    _batch = Signal(int, object)  # (watch generation, JobBatch), filtered in the GUI thread

    def __init__(
        self,
        address: str,
        *,
        autostart: bool = True,
        data_dir: Path | None = None,
        serve_args: tuple[str, ...] = (),
        local_address: str = DEFAULT_CONTROLLER,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.address = address
        self.autostart = autostart
        self.data_dir = data_dir
        self.serve_args = serve_args
        self.local_address = local_address  # the only address at which the app starts a controller
        self.online = False
        self.started_pid = 0  # the controller this app started, if it did
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="tensorfleet-grpc", daemon=True)
        self._client: AsyncClient | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[Any]] = set()  # call()/run_blocking() in flight: stop() cancels them
        self._watch_generation = 0  # bumped by each watch_job: a batch of an earlier watch is dropped
        self._stopping = False
        self._jobs: dict[str, dict[str, Any]] = {}
        self._jobs_token = ""  # WatchJobs' resume token: a reconnect gets only what changed meanwhile
        self._agents: dict[str, dict[str, Any]] = {}
        self._deliver.connect(self._on_deliver, Qt.ConnectionType.QueuedConnection)
        self._batch.connect(self._on_batch, Qt.ConnectionType.QueuedConnection)

    # ---- lifecycle (GUI thread)

    def start(self) -> None:
        # What exists now (modules, the window) lives as long as the app: out of the garbage collector's sight. A
        # full collection otherwise walks it all (136 ms, measured): triggered by the allocations of this thread
        # (a replayed history), it holds the GIL and the window freezes that long.
        gc.freeze()
        self._thread.start()
        self._submit(self._start_supervisor())

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the asyncio side; the window calls this before QApplication exits. Every task the bridge started
        (supervision, the job and agent streams, the followed job, calls in flight) is cancelled and awaited
        first, so none is destroyed pending."""
        if self._stopping or not self._thread.is_alive():
            self._stopping = True
            return
        try:
            self._submit(self._shutdown()).result(timeout)
        except Exception as exc:
            log.warning("bridge shutdown: %s", exc)
        self._stopping = True  # from here on a late call() fails at once instead of queueing on a dead loop
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def reconnect(self, address: str) -> None:
        self.address = address
        self._submit(self._start_supervisor())

    def call(
        self,
        fn: ClientCall,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> Future[None]:
        """Run `fn(client)` on the asyncio thread; its result or error comes back to the GUI thread."""
        return self._submit(self._invoke(fn, on_result, on_error))

    def run_blocking(
        self,
        fn: Callable[[], Any],
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> Future[None]:
        """Run a blocking function (no controller needed) in a worker thread of the asyncio side."""

        async def blocking(_client: AsyncClient | None) -> Any:
            return await asyncio.to_thread(fn)

        return self._submit(self._invoke(blocking, on_result, on_error, need_client=False))

    def watch_job(self, job_id: str | None) -> None:
        """Follow one job's events (every point from the first, then live, as `job_batch`); None stops following.
        Batches of the job followed before are dropped, even those already queued."""
        self._watch_generation += 1
        self._submit(self._follow_job(job_id, self._watch_generation))

    # ---- GUI-thread side of results

    @Slot(object, object, object)
    def _on_deliver(self, callback: Any, result: Any, error: Any) -> None:
        if error is not None:
            if callback is not None:
                callback(str(error))
            else:
                self.failed.emit(str(error))
        elif callback is not None:
            callback(result)

    @Slot(int, object)
    def _on_batch(self, generation: int, batch: JobBatch) -> None:
        if generation == self._watch_generation:
            self.job_batch.emit(batch.job_id, batch)

    # ---- asyncio thread

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._cancel_all())
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _cancel_all(self) -> None:
        """Whatever is still scheduled once the loop stopped (a stream's cleanup, a stray call) ends here."""
        tasks = [t for t in asyncio.all_tasks(self._loop) if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _submit(self, coro: Awaitable[Any]) -> Future[Any]:
        if self._stopping or self._loop.is_closed():  # a view's timer that fires after the window stopped the bridge
            if asyncio.iscoroutine(coro):
                coro.close()
            stopped: Future[Any] = Future()
            stopped.set_exception(ControllerUnreachable("the window has stopped talking to the controller"))
            return stopped
        return asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]

    async def _invoke(
        self,
        fn: Callable[[Any], Awaitable[Any]],
        on_result: Callable[[Any], None] | None,
        on_error: Callable[[str], None] | None,
        need_client: bool = True,
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._calls.add(task)
        try:
            client = await self._ready_client() if need_client else self._client
            result = await fn(client)
        except (TensorFleetError, ProjectError, ValueError, OSError) as exc:  # what the user can fix
            self._deliver.emit(on_error, None, str(exc))
        except Exception as exc:
            log.exception("call failed")
            self._deliver.emit(on_error, None, f"{type(exc).__name__}: {exc}")
        else:
            self._deliver.emit(on_result, result, None)
        finally:
            self._calls.discard(task)

    async def _ready_client(self) -> AsyncClient:
        if self._client is None:
            raise ControllerUnreachable(f"not connected to a controller yet ({self.address})")
        return self._client

    async def _start_supervisor(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
        await self._drop_client()
        self._supervisor = asyncio.create_task(self._supervise(self.address))

    async def _drop_client(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _shutdown(self) -> None:
        mine = asyncio.current_task()
        tasks = [t for t in (self._supervisor, self._watch, *self._calls) if t is not None and t is not mine]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # the supervisor's gather awaits both streams
        self._supervisor = self._watch = None
        await self._drop_client()

    async def _supervise(self, address: str) -> None:
        first, announced = True, False
        while True:
            try:
                if first and self.autostart:
                    connection = await connect_or_start(
                        address, self.data_dir, self.serve_args, local_address=self.local_address
                    )
                    message = connection.describe()
                    self.started_pid = connection.pid
                    started = connection.started
                elif await answers(address):
                    message, started = f"connected to the controller on {address}", False
                else:
                    raise ControllerUnreachable(f"no TensorFleet controller answers at {address}")
                first = False
                self._client = AsyncClient(address)
                info = await self._client.info()
                self.online, announced = True, False
                self.connected.emit({"address": address, "message": message, "info": info, "started": started})
                await asyncio.gather(self._follow_jobs(self._client), self._follow_agents(self._client))
                raise ControllerUnreachable(f"the controller at {address} closed the connection")
            except (ControllerUnreachable, StartFailed) as exc:
                first = False
                await self._drop_client()
                if self.online or not announced:
                    self.disconnected.emit(str(exc))
                self.online, announced = False, True
                await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("controller supervision failed")
                await self._drop_client()
                self.online, announced = False, True
                self.disconnected.emit(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1.0)

    async def _follow_jobs(self, client: AsyncClient) -> None:
        """The job list, kept by WatchJobs: a snapshot, then each change (a job that ended is always sent in its
        final state, so a fast job's end is never missed; a deleted job's id comes in removed_job_ids)."""
        async for change in client.watch_jobs(limit=JOB_LIST_LIMIT, resume_token=self._jobs_token):
            self._jobs_token = change["resume_token"]
            if change["snapshot"]:
                before = self._jobs
                self._jobs = {job["id"]: job for job in change["jobs"]}
                finished = [j for j in change["jobs"] if _ended(before.get(j["id"]), j)]
            else:
                finished = [j for j in change["jobs"] if _ended(self._jobs.get(j["id"]), j, first_seen=True)]
                self._jobs.update((job["id"], job) for job in change["jobs"])
                for job_id in change["removed_job_ids"]:  # deleted (`tensorfleet rm`): its row goes
                    self._jobs.pop(job_id, None)
            for job in finished:
                self.job_finished.emit(job)
            jobs = sorted(self._jobs.values(), key=lambda j: j["created_at"], reverse=True)[:JOB_LIST_LIMIT]
            self._jobs = {job["id"]: job for job in jobs}
            self.jobs_changed.emit(jobs)

    async def _follow_agents(self, client: AsyncClient) -> None:
        self._agents = {a["id"]: a for a in await client.agents()}
        self.agents_changed.emit(list(self._agents.values()))
        async for event in client.watch_agents():
            agent = event["agent"]
            if event["kind"] == "removed":
                self._agents.pop(agent["id"], None)
            else:
                self._agents[agent["id"]] = agent
            self.agent_event.emit(event)
            self.agents_changed.emit(list(self._agents.values()))

    async def _follow_job(self, job_id: str | None, generation: int) -> None:
        # Swapped before any await: a second call running while this one waits for the previous watch to end
        # sees this call's task and cancels it, so no watch is ever left running unreferenced.
        new = asyncio.create_task(self._watch_events(job_id, generation)) if job_id else None
        previous, self._watch = self._watch, new
        if previous is not None:  # its stream closes and its collected events go with it
            previous.cancel()
            await asyncio.gather(previous, return_exceptions=True)

    async def _watch_events(self, job_id: str, generation: int) -> None:
        """Every event of the job from the first (a replay, then live), collected into JobBatches: one goes out at
        once after a quiet spell, then at most one per BATCH_SECONDS with all that arrived meanwhile."""
        loop = asyncio.get_running_loop()
        builder = BatchBuilder(job_id)
        sent_at = -BATCH_SECONDS
        pending: asyncio.TimerHandle | None = None

        def send() -> None:
            nonlocal sent_at, pending
            pending = None
            if builder:
                self._batch.emit(generation, builder.take())
                sent_at = loop.time()

        try:
            while True:
                try:
                    client = await self._ready_client()
                    async for msg in client.watch_messages(job_id, builder.last_seq):
                        builder.add(msg)
                        if pending is None:
                            wait = sent_at + BATCH_SECONDS - loop.time()
                            if wait <= 0:
                                send()
                            else:
                                pending = loop.call_later(wait, send)
                    if pending is not None:  # the stream ended: what is left goes now
                        pending.cancel()
                    send()
                    job = await client.job(job_id)
                    if job["state"] in TERMINAL:
                        return
                    await asyncio.sleep(RESUBSCRIBE_SECONDS)  # a stream that keeps ending is not asked again at once
                except ControllerUnreachable:
                    await asyncio.sleep(1.0)
                except TensorFleetError as exc:
                    self.failed.emit(str(exc))
                    return
        finally:
            if pending is not None:
                pending.cancel()


def _ended(before: dict[str, Any] | None, now: dict[str, Any], first_seen: bool = False) -> bool:
    """A job that reached a final state since the window last saw it (or, in a change, that it never saw: a job
    submitted and finished between two messages)."""
    if now["state"] not in TERMINAL:
        return False
    return before["state"] not in TERMINAL if before is not None else first_seen
