"""Runs accepted tasks in worker processes and journals everything they do.

The executor owns the slots, the warm worker pool and the task lifecycle:
ACCEPTED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED, always ending with one
Finished event. Nothing here blocks the event loop; disk work goes to threads (a task's journal dir, one mkdir,
is made on the loop: its files are the journal writer's).
A project task (issue 19) is PREPARING between ACCEPTED and RUNNING: its working
dir and env are made ready (runtime.project_prepare), and its output dir's files
become artifacts before its Finished, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tensorfleet_agent.core import project_layout
from tensorfleet_agent.core.codec import spec_to_dict
from tensorfleet_agent.core.errors import AlreadyExists, NotFound, Unavailable
from tensorfleet_agent.core.sizes import format_size
from tensorfleet_agent.core.types import (
    ArtifactReady,
    CheckpointSaved,
    EventPayload,
    ExitCause,
    Finished,
    LogLine,
    MetricPoint,
    Progress,
    StateChanged,
    TaskSpec,
    TaskState,
    TaskSummary,
    TrialEnded,
)
from tensorfleet_agent.metrics import AgentMetrics
from tensorfleet_agent.runtime.blobs import BlobStore
from tensorfleet_agent.runtime.datasets import DatasetCache, DatasetFailed, HeldDataset
from tensorfleet_agent.runtime.envs import DEFAULT_LIMIT_BYTES, EnvCache
from tensorfleet_agent.runtime.forking import ForkServer
from tensorfleet_agent.runtime.gpu_shares import others_by_gpu, ours_by_gpu, over_share_line, tree, used_by
from tensorfleet_agent.runtime.gpus import Gpus
from tensorfleet_agent.runtime.journal import WORK_DIR, Journal, TaskLog
from tensorfleet_agent.runtime.process import WorkerProcess
from tensorfleet_agent.runtime.project_prepare import PreparedProject, PrepareFailed, collect_outputs, prepare_project
from tensorfleet_agent.runtime.slots import GangSlots, Slot, SlotPool
from tensorfleet_agent.workloads.registry import get_workload

log = logging.getLogger(__name__)

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "TORCH_NUM_THREADS",
)
# What a spare worker imports while it waits (--no-fork-server): the project runner first (light: 30-50 ms of a
# project task's start otherwise), then the scikit-learn workloads' libraries. Torch is left out (a second or two,
# but hundreds of MB held by every idle spare; skops.io is imported without it, see skops_files.skops_io).
_PRELOAD = (
    "tensorfleet_agent.workloads.project",
    "numpy",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.model_selection",
    "sklearn.metrics",
    "skops.io",
    "tensorfleet_agent.workloads.sklearn_basic",
)
_WATCHDOG_PERIOD = 0.1
# A taken spare's replacement starts once the task that took it has printed its first line (or ended), at most
# this long after: its start (interpreter, imports, then the preload's seconds of CPU) would otherwise compete with
# that task's own start, on a small box the most.
_SPARE_REFILL_DELAY = 1.0
# The exit causes a workload's `done` may name for its own failure (worker.py "cause"); others are the agent's.
_WORKLOAD_CAUSES = frozenset(
    {ExitCause.EXCEPTION, ExitCause.EXIT_CODE, ExitCause.SIGNAL, ExitCause.SETUP, ExitCause.BAD_COMMAND}
)
_CANCEL_GRACE = 1.0
# How often the GPU memory of tasks sharing a GPU is read (NVML's per-process list), while any runs.
_SHARE_CHECK_PERIOD = 1.0
# How long a worker killed by a SIGTERM the agent did not send waits to be marked preempted by the agent's own stop.
_SIGTERM_SETTLE = 1.0
# The blobs a worker writes (artifacts, checkpoints; a sweep's bundled trials write two each, ms apart) are counted
# in the blob cache in one thread hop a second for all written meanwhile (BlobStore throttles eviction passes).
_ADOPT_PERIOD = 1.0
#: Workload categories that can save a checkpoint and stop when asked (SIGUSR1); the others are stopped at once.
CHECKPOINTING = frozenset({"torch", "script"})
#: Workload families whose warm worker serves the next task of any job (docs/architecture.md, "Warm workers").
_SHARED_FAMILIES = frozenset({"diagnostic", "sklearn"})
#: A shared worker whose resident memory grew this much over its first task's is retired, not parked: the next
#: job's memory limit counts all of it.
_REUSE_GROWTH = 64 << 20
_SEEDS = ("random_state", "seed")  # the params the reproducibility line names


@dataclass
class _Running:
    spec: TaskSpec
    slots: tuple[Slot, ...]
    entry: TaskLog
    started: float = field(default_factory=time.monotonic)
    worker: WorkerProcess | None = None
    kill_cause: str = ""
    kill_message: str = ""
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    stop_requested: bool = False
    preempted: str = ""  # the reason, once preempt() was asked: it ends CANCELLED with ExitCause.PREEMPTED
    ending: asyncio.Event = field(default_factory=asyncio.Event)  # set once preempted or killed
    runner: asyncio.Task[None] | None = None
    visible_gpus: tuple[int, ...] = ()  # CUDA_VISIBLE_DEVICES: the GPUs of the job's ranks here, own at LOCAL_RANK
    project: PreparedProject | None = None  # a project task's working dir and env, once PREPARING is done
    dataset: HeldDataset | None = None  # its dataset version's tree (TENSORFLEET_DATASET_DIR), held until its end
    # Set at the task's first output line or its end: a spare it took is replaced from then on (see _worker_for).
    going: asyncio.Event = field(default_factory=asyncio.Event)
    gpu_share: int = 0  # bytes of its GPU's memory it was promised (it shares the GPU of its one slot); 0: none
    over_share: bool = False  # its processes use more than gpu_share now (said once per crossing in its log)
    trial: int = -1  # the bundled trial (TaskSpec.trials) its worker runs now: its events carry it; -1: its own run


@dataclass
class ExecutorConfig:
    data_dir: Path
    warm_idle_seconds: float = 60.0
    journal_retention_seconds: float = 7 * 86400
    journal_max_finished: int = 10_000
    spare_workers: int = 1  # without the fork server only
    env_cache_bytes: int = DEFAULT_LIMIT_BYTES  # project envs under <data dir>/envs, LRU beyond this
    fork_server: bool = True  # each task's worker forked from a warm, clean process (runtime/forkserver.py)


class Executor:
    def __init__(
        self,
        config: ExecutorConfig,
        slots: SlotPool,
        blobs: BlobStore,
        metrics: AgentMetrics,
        envs: EnvCache | None = None,
        gpus: Gpus | None = None,
    ) -> None:
        self.config = config
        self.gpus = gpus  # NVML's per-process memory, for tasks that share a GPU (None: no GPU to share)
        self._share_check: asyncio.Task[None] | None = None
        self.slots = slots
        self.blobs = blobs
        self.metrics = metrics
        # The caller owns (and closes) the env cache it passes; by default one in the data dir.
        self._own_envs = envs is None
        self.envs = envs if envs is not None else EnvCache(config.data_dir / "envs", config.env_cache_bytes)
        self.journal = Journal(config.data_dir / "tasks")
        self.datasets = DatasetCache(config.data_dir / "datasets", blobs)  # trees of dataset versions
        self.draining = False
        self._running: dict[str, _Running] = {}
        # task id -> (job id, GPU index) of each task holding a GPU share, from the moment it took it (before it is
        # in _running: a gang's ranks arrive at once, and its other ranks must see its GPU taken)
        self._share_gpus: dict[str, tuple[str, int]] = {}
        self.gangs = GangSlots(slots)
        self._warm: dict[tuple[str, tuple[int | None, ...], int], list[tuple[WorkerProcess, float]]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[object]] = set()
        # blobs workers wrote, in the order they came, not yet counted in the cache's LRU (see _adopt)
        self._adopted: dict[str, None] = {}
        self._adopting: asyncio.Task[None] | None = None
        self._discards: set[asyncio.Task[None]] = set()  # workers started for tasks that ended while PREPARING
        self._spares: list[WorkerProcess] = []
        self._spares_starting = 0
        self._forks: asyncio.Task[ForkServer] | None = None  # the fork server, started or starting
        metrics.slots_total.set(slots.total)

    # ---- lifecycle

    async def start(self) -> None:
        loaded = await asyncio.to_thread(self.journal.load)
        await asyncio.to_thread(self.datasets.load)
        self.journal.start()
        for entry in loaded:
            if not entry.finished:
                log.warning("task %s was running when the agent stopped; marking it FAILED", entry.task_id)
                self.journal.append(
                    entry.task_id,
                    Finished(TaskState.FAILED, ExitCause.AGENT_RESTARTED, "the agent restarted while this task ran"),
                )
        pruned = await asyncio.to_thread(
            self.journal.prune, self.config.journal_retention_seconds, self.config.journal_max_finished
        )
        if pruned:
            log.info("journal retention: removed %d finished task(s)", pruned)
        self._reaper = asyncio.create_task(self._reap_idle_workers())
        self._start_fork_server()
        self._refill_spares()

    async def drain(self, timeout: float) -> None:
        """Take no new work; let running tasks finish for `timeout` seconds, then cancel them."""
        self.draining = True
        pending = [r.runner for r in self._running.values() if r.runner is not None]
        if pending:
            log.info("draining: waiting up to %.0fs for %d task(s)", timeout, len(pending))
            _done, still = await asyncio.wait(pending, timeout=timeout)
            for task_id, running in list(self._running.items()):
                log.warning("drain timeout: cancelling task %s", task_id)
                self._kill(running, ExitCause.DRAIN_TIMEOUT, f"the agent was stopped; drain timeout {timeout:g}s")
            if still:
                await asyncio.wait(still, timeout=10)

    async def close(self) -> None:
        self.draining = True
        for running in list(self._running.values()):
            self._kill(running, ExitCause.CANCELLED, "the agent is shutting down")
        runners = [r.runner for r in self._running.values() if r.runner is not None]
        if runners:
            await asyncio.wait(runners, timeout=10)
        if self._discards:
            await asyncio.wait(self._discards, timeout=10)
        if self._share_check is not None:
            self._share_check.cancel()
        if self._adopting is not None:
            self._adopting.cancel()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for pool in self._warm.values():
            for worker, _ in pool:
                await worker.close()
        self._warm.clear()
        spares, self._spares = self._spares, []
        for worker in spares:
            await worker.close()
        forks, self._forks = self._forks, None
        if forks is not None:
            with contextlib.suppress(Exception):
                await (await forks).close()
        if self._own_envs:
            await self.envs.close()
        await self.journal.close()

    # ---- queries

    @property
    def tasks_running(self) -> int:
        return len(self._running)

    def list_tasks(self, include_finished: bool) -> list[TaskSummary]:
        out = []
        for entry in self.journal.entries():
            if entry.finished and not include_finished:
                continue
            out.append(
                TaskSummary(
                    task_id=entry.task_id,
                    job_id=str(entry.meta.get("spec", {}).get("job_id", "")),
                    workload=str(entry.meta.get("spec", {}).get("workload", "")),
                    state=entry.state,
                    created_at=entry.created_at,
                    finished_at=entry.finished_at,
                    last_seq=entry.last_seq,
                    exit_cause=entry.exit_cause,
                    slot_ids=tuple(entry.meta.get("slot_ids", ())),
                )
            )
        return sorted(out, key=lambda s: s.created_at)

    async def watch(self, task_id: str, after_seq: int) -> AsyncIterator[bytes]:
        """The task's events after after_seq as serialized TaskEventBatch messages, straight from the journal."""
        async for records in self.journal.watch(task_id, after_seq):
            self.metrics.events_streamed.inc(len(records))
            yield b"".join(records)

    # ---- commands

    async def run_task(self, spec: TaskSpec) -> tuple[int, ...]:
        """Accept a validated task: take its slots, journal it and start it. Returns slot ids."""
        existing = self._existing(spec)
        if existing is not None:
            return existing
        if self.draining:
            raise Unavailable("the agent is draining and accepts no new tasks")
        missing = [ref.sha256 for ref in spec.inputs if not self.blobs.has(ref.sha256)]
        if missing:
            raise NotFound(f"input blob(s) not on this agent, upload them with PutBlob first: {', '.join(missing)}")
        share = spec.gpu_memory_bytes
        slots: tuple[Slot, ...]
        visible: tuple[int, ...]
        if share:  # a share of one GPU's memory: its slot may hold other sharing tasks, never a whole-GPU one
            others, ours = await asyncio.to_thread(self._gpu_use)
            if self._existing(spec) is not None or self.draining:  # the same RunTask again, meanwhile
                return await self.run_task(spec)
            slot = self.slots.acquire_share(share, others, ours, self._gang_gpus(spec))
            if slot.gpu_index is not None:
                self._share_gpus[spec.task_id] = (spec.job_id, slot.gpu_index)
            slots, visible = (slot,), (slot.gpu_index,) if slot.gpu_index is not None else ()
        else:
            slots, visible = self.gangs.acquire(
                spec.job_id, spec.attempt, spec.local_rank, spec.local_world_size, spec.gpus
            )
        try:
            if spec.inputs:  # (most tasks have none: no lock, no pass over the pins)
                self.blobs.pin(ref.sha256 for ref in spec.inputs)
            meta = {"spec": spec_to_dict(spec), "slot_ids": [s.id for s in slots]}
            entry = self.journal.create(spec.task_id, meta)  # a mkdir: its files are the journal writer's
        except BaseException:
            self._release(slots, share, spec.task_id)
            self.gangs.finished(spec.job_id, spec.attempt, spec.local_rank)
            self.blobs.unpin(ref.sha256 for ref in spec.inputs)
            raise
        running = _Running(spec, slots, entry, visible_gpus=visible, gpu_share=share)
        self._running[spec.task_id] = running
        self._gauge()
        accepted = f"slots {[s.id for s in slots]}"
        if share:
            accepted += f", sharing GPU {','.join(map(str, visible))} with {format_size(share)} of its memory"
        self.journal.append(spec.task_id, StateChanged(TaskState.ACCEPTED, accepted))
        running.runner = asyncio.create_task(self._run(running), name=f"task-{spec.task_id}")
        if share and self._share_check is None:
            self._share_check = asyncio.create_task(self._check_shares(), name="gpu-share-check")
        return tuple(s.id for s in slots)

    def _release(self, slots: tuple[Slot, ...], share: int, task_id: str) -> None:
        if share:
            self._share_gpus.pop(task_id, None)
            self.slots.release_share(slots[0], share)
        else:
            self.slots.release(slots)

    def _gpu_use(self) -> tuple[dict[int, int], dict[int, int]]:
        """Blocking: GPU index -> memory other programs use there (NVML), which no share may be promised; and GPU
        index -> memory this agent's own tasks use there (a sharing task over its promise takes more than it)."""
        if self.gpus is None:
            return {}, {}
        procs = self.gpus.processes()
        return others_by_gpu(procs), ours_by_gpu(procs)

    def _gang_gpus(self, spec: TaskSpec) -> frozenset[int]:
        """The GPUs the other ranks of a sharing gang rank's job share here: not for it (NCCL refuses two ranks of
        one process group on one device)."""
        if spec.partition != "gang" or spec.world_size <= 1:
            return frozenset()
        return frozenset(
            gpu for task_id, (job, gpu) in self._share_gpus.items() if job == spec.job_id and task_id != spec.task_id
        )

    def shared_gpu(self, spec: TaskSpec, slot_ids: tuple[int, ...]) -> tuple[int, int] | None:
        """(GPU index, bytes promised) of an accepted task that shares a GPU by memory, as RunTask answers it (the
        controller planned a GPU; this agent's best fit chose this one); None for any other task."""
        if not spec.gpu_memory_bytes or not slot_ids or not 0 <= slot_ids[0] < self.slots.total:
            return None
        index = self.slots.slots[slot_ids[0]].gpu_index
        return (index, spec.gpu_memory_bytes) if index is not None else None

    async def _check_shares(self) -> None:
        """While tasks share GPUs: once a period, a task whose processes use more GPU memory than it was promised
        gets a line in its log saying so (once per crossing: again only after it came back under)."""
        try:
            while True:
                sharing = [r for r in self._running.values() if r.gpu_share and r.worker is not None]
                if not any(r.gpu_share for r in self._running.values()):
                    return
                if sharing and self.gpus is not None:
                    usage = await asyncio.to_thread(self._share_usage, sharing)
                    for running, used in zip(sharing, usage, strict=True):
                        self._note_share(running, used)
                await asyncio.sleep(_SHARE_CHECK_PERIOD)
        finally:
            self._share_check = None

    def _share_usage(self, sharing: list[_Running]) -> list[int]:
        """Blocking: the GPU memory each task's process tree uses on its GPU."""
        assert self.gpus is not None
        procs = self.gpus.processes()
        out = []
        for running in sharing:
            worker = running.worker
            pids = tree(worker.pid) if worker is not None and worker.pid else set()
            out.append(used_by(procs, running.visible_gpus[0], pids) if running.visible_gpus else 0)
        return out

    def _note_share(self, running: _Running, used: int) -> None:
        over = used > running.gpu_share
        if over and not running.over_share:
            line = over_share_line(running.visible_gpus[0], used, running.gpu_share)
            log.warning("task %s: %s", running.spec.task_id, line)
            self._append(running, LogLine("agent", line))
        running.over_share = over

    def _existing(self, spec: TaskSpec) -> tuple[int, ...] | None:
        """RunTask is idempotent: the same spec again returns the first acceptance."""
        try:
            entry = self.journal.get(spec.task_id)
        except NotFound:
            return None
        if entry.meta.get("spec") != spec_to_dict(spec):
            raise AlreadyExists(f"task id {spec.task_id!r} is already used by a different task on this agent")
        return tuple(entry.meta.get("slot_ids", ()))

    async def cancel(self, task_id: str, reason: str, checkpoint_grace: float = 0.0) -> bool:
        running = self._running.get(task_id)
        if running is None:
            self.journal.get(task_id)  # NotFound for unknown ids
            return False
        worker = running.worker
        if checkpoint_grace > 0 and worker is not None and worker.alive and not running.kill_cause:
            self._request_stop(running, worker, reason, checkpoint_grace)
            return True
        self._kill(running, ExitCause.CANCELLED, reason or "cancelled")
        if running.runner is not None:
            # Answer once the slot is free again, so the caller may place work there at once.
            await asyncio.wait({running.runner}, timeout=_CANCEL_GRACE + 3.0)
        return True

    async def preempt(self, task_id: str, reason: str, checkpoint_grace: float) -> bool:
        """Give the machine back (desk owner returned, Slurm allocation ending): a workload that can checkpoint is
        asked to save one and stop, and is killed after `checkpoint_grace` seconds; the others are killed now. The
        task ends CANCELLED with ExitCause.PREEMPTED and `reason` as its error: the controller queues it again
        without counting a failure. False when it was not running (NotFound for an unknown id)."""
        running = self._running.get(task_id)
        if running is None:
            self.journal.get(task_id)
            return False
        if running.kill_cause:
            return True  # already ending
        _mark_preempted(running, reason)
        worker = running.worker
        checkpoints = get_workload(running.spec.workload).category in CHECKPOINTING
        if checkpoint_grace > 0 and checkpoints and worker is not None and worker.alive:
            if running.stop_requested:  # already stopping (a pause's longer grace): handed back within this one
                self._kill_after(running, running.preempted, checkpoint_grace)
            else:
                self._request_stop(running, worker, running.preempted, checkpoint_grace)
        else:
            self._kill(running, ExitCause.PREEMPTED, running.preempted)
        return True

    def preempt_all(self, reason: str, checkpoint_grace: float) -> list[str]:
        """preempt() every task this agent runs not already ending; returns their ids (they end in the background)."""
        ids = [task_id for task_id, r in self._running.items() if not (r.kill_cause or r.preempted)]
        for task_id in ids:
            # Marked now, not when preempt() runs: a worker the same SIGTERM killed (Slurm signals every process
            # of the step) ends PREEMPTED, not FAILED (see _follow).
            _mark_preempted(self._running[task_id], reason)
            self._spawn(self.preempt(task_id, reason, checkpoint_grace))
        return ids

    def _request_stop(self, running: _Running, worker: WorkerProcess, reason: str, grace: float) -> None:
        """Ask the workload to checkpoint and stop (SIGUSR1 to the worker only); cancel it if it will not."""
        if running.stop_requested:
            return
        running.stop_requested = True
        self._append(running, LogLine("agent", f"asked to save a checkpoint and stop: {reason or 'no reason given'}"))
        worker.signal_worker(signal.SIGUSR1)
        self._kill_after(running, reason, grace)

    def _kill_after(self, running: _Running, reason: str, grace: float) -> None:
        """Kill the task `grace` seconds from now if it has not ended by then."""

        async def enforce() -> None:
            await asyncio.sleep(grace)
            if self._running.get(running.spec.task_id) is running:
                self._kill(
                    running,
                    ExitCause.PREEMPTED if running.preempted else ExitCause.CANCELLED,
                    f"{reason or 'cancelled'} (the workload did not stop at a checkpoint within {grace:g}s)",
                )

        self._spawn(enforce())

    def _kill(self, running: _Running, cause: str, message: str) -> None:
        if running.kill_cause:
            return
        running.kill_cause, running.kill_message = cause, message
        running.killed.set()
        running.ending.set()
        worker = running.worker
        if worker is not None and worker.alive:
            self._spawn(worker.terminate(_CANCEL_GRACE))

    # ---- the task's life

    async def _run(self, running: _Running) -> None:
        spec = running.spec
        status, cause, error = TaskState.FAILED, ExitCause.SETUP, ""
        reusable = False
        try:
            workload = get_workload(spec.workload)
            if spec.inputs:  # without any, the worker makes the empty dir (mkdirs cost ~0.3 ms each on ext4)
                await asyncio.to_thread(self._link_inputs, running)
            if spec.workload == project_layout.WORKLOAD or spec.dataset_mount is not None:
                # The worker starts while the project and the dataset are prepared: its start-up is off the path.
                starting = asyncio.create_task(self._worker_for(running))
                try:
                    if spec.dataset_mount is not None:
                        running.dataset = await self._mount(running)
                    if spec.workload == project_layout.WORKLOAD:
                        running.project = await self._prepare(running)
                except BaseException:
                    discard = asyncio.create_task(self._discard(starting))
                    self._discards.add(discard)
                    discard.add_done_callback(self._discards.discard)
                    raise
                worker = await starting
            else:
                worker = await self._worker_for(running)
            if running.kill_cause:
                await worker.terminate(_CANCEL_GRACE)
                raise _Killed
            running.worker = worker
            worker.on_output = lambda stream, line: self._output(running, stream, line)
            self._append(running, StateChanged(TaskState.RUNNING, f"worker pid {worker.pid}"))
            # its versions came with its hello: the line goes with RUNNING (one commit, one message to the watcher),
            # and the worker writes nothing to the agent as a task starts
            self._append(running, LogLine("agent", _reproducibility(spec, worker.versions)))
            worker.send(
                {
                    "op": "run",
                    "entry": workload.entry,
                    "spec": running.entry.meta["spec"],  # spec_to_dict(spec), made once for its journal
                    "task_dir": str(running.entry.directory / WORK_DIR),
                    "blobs_dir": str(self.blobs.root),
                    "dataset_dir": str(running.dataset.path) if running.dataset is not None else "",
                    # set by the worker itself: the environment a worker starts with has no TENSORFLEET_* name
                    "gpu_memory_fraction": self._memory_fraction(running),
                }
            )
            status, cause, error, reusable = await self._follow(running, worker)
            reusable = reusable and workload.category != "script"  # scripts always get a fresh process
        except _Killed:
            status, cause, error = self._killed_outcome(running)
        except (PrepareFailed, DatasetFailed) as exc:
            status, cause, error = TaskState.FAILED, exc.cause, exc.message
        except Exception as exc:
            log.exception("task %s could not start", spec.task_id)
            status, cause, error = TaskState.FAILED, ExitCause.SETUP, f"{type(exc).__name__}: {exc}"
        finally:
            if running.worker is not None:
                worker = running.worker
                await worker.drain_output()
                worker.on_output = None
                # A finished task leaves nothing running: what it started in a session of its own or as a daemon
                # is under its worker (a subreaper) and dies now. A reusable worker that had such leftovers is
                # retired too: the pools or handles its task held there point at killed processes.
                if reusable and not self.draining and not await worker.kill_leftovers() and not running.kill_cause:
                    # Not if a cancel came while it finished (its worker is being stopped), and a cancel that comes
                    # now no longer reaches the worker, which may serve another job's task next.
                    running.worker = None
                    self._park(running, worker, status is TaskState.SUCCEEDED)
                elif worker.alive:
                    await worker.kill_tree()
                    await worker.wait()
            if running.project is not None:
                await self._finish_project(running, running.project)
            if running.dataset is not None:
                self.datasets.release(running.dataset.key)
            duration = time.monotonic() - running.started
            self.journal.append(spec.task_id, Finished(status, cause, error, duration))
            if spec.workload == project_layout.WORKLOAD:
                # Its files are in the blob cache and its outputs are artifacts: a copy of the project per task
                # kept for the journal's retention would fill the disk. Removed after Finished, off its path.
                workdir = running.entry.directory / WORK_DIR / project_layout.WORKDIR
                self._spawn(asyncio.to_thread(shutil.rmtree, workdir, True))
            running.going.set()
            self._running.pop(spec.task_id, None)
            self._release(running.slots, running.gpu_share, spec.task_id)
            self.gangs.finished(spec.job_id, spec.attempt, spec.local_rank)
            if spec.inputs:
                self.blobs.unpin(ref.sha256 for ref in spec.inputs)
            else:  # nothing pinned: what an unpin of nothing did, without its pass over every pin
                self.blobs.released()
            self._gauge()
            self.metrics.task_duration.labels(spec.workload, status.value).observe(duration)
            if status is TaskState.SUCCEEDED:
                self.metrics.completed.labels(spec.workload).inc()
            else:
                self.metrics.failed.labels(spec.workload, cause).inc()

    async def _prepare(self, running: _Running) -> PreparedProject:
        """PREPARING: lay out the project and get its env, until done, killed (cancel, drain) or out of time."""
        spec = running.spec
        self._append(running, StateChanged(TaskState.PREPARING, "laying out the project and its environment"))
        work = running.entry.directory / WORK_DIR
        preparing = asyncio.create_task(
            prepare_project(spec, work, self.blobs, self.envs, lambda p: self._append(running, p)),
            name=f"prepare-{spec.task_id}",
        )
        killed = asyncio.create_task(running.killed.wait())
        remaining = None
        if spec.timeout_seconds > 0:
            remaining = max(0.0, running.started + spec.timeout_seconds - time.monotonic())
        try:
            await asyncio.wait({preparing, killed}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            killed.cancel()
            if not preparing.done():
                preparing.cancel()  # the env cache stops the uv build when no other task waits for it
                await asyncio.wait({preparing})
        if preparing.cancelled():  # killed, or out of time
            if not running.kill_cause:
                self._kill(running, ExitCause.TIMEOUT, f"wall-clock timeout of {spec.timeout_seconds:g}s exceeded")
            raise _Killed
        failure = preparing.exception()
        if running.kill_cause:  # the kill decides, also when PREPARING had just ended
            if failure is None:
                preparing.result().release()
            raise _Killed
        if failure is not None:
            raise failure  # PrepareFailed, or a bug that _run reports as a SETUP failure
        return preparing.result()

    async def _mount(self, running: _Running) -> HeldDataset:
        """The task's dataset version materialized (or found) read-only, until done, killed or out of time. The
        build runs in a thread that is told to stop, never abandoned: what it holds is given back when it ends."""
        spec = running.spec
        mount = spec.dataset_mount
        assert mount is not None
        self._append(running, StateChanged(TaskState.PREPARING, f"dataset {mount.name}:v{mount.version}"))
        stop = threading.Event()
        getting = asyncio.ensure_future(asyncio.to_thread(self.datasets.acquire, mount, stop))
        killed = asyncio.create_task(running.killed.wait())
        remaining = None
        if spec.timeout_seconds > 0:
            remaining = max(0.0, running.started + spec.timeout_seconds - time.monotonic())
        try:
            await asyncio.wait({getting, killed}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            killed.cancel()
        if not getting.done():  # killed or out of time: the thread stops at its next file
            stop.set()
            if not running.kill_cause:
                self._kill(running, ExitCause.TIMEOUT, f"wall-clock timeout of {spec.timeout_seconds:g}s exceeded")
            await asyncio.wait({getting})
        failure = getting.exception()
        if running.kill_cause:
            if failure is None:
                self.datasets.release(getting.result().key)
            raise _Killed
        if failure is not None:
            raise failure  # DatasetFailed, or a bug that _run reports as a SETUP failure
        held = getting.result()
        self._append(running, LogLine("agent", held.summary(mount)))
        self._append(running, held.transfer())
        return held

    async def _discard(self, starting: asyncio.Task[WorkerProcess]) -> None:
        """Close a worker started for a task that will not run after all (in the background)."""
        try:
            worker = await starting
        except Exception as exc:  # its start failed: nothing to close
            log.debug("a worker started ahead was not needed and failed to start: %s", exc)
            return
        await worker.close()

    async def _finish_project(self, running: _Running, project: PreparedProject) -> None:
        """The output dir's files become artifacts (any outcome), then the env and the pins are given back."""
        events: list[EventPayload] = []  # filled in the thread, journaled here on the loop
        try:
            await asyncio.to_thread(collect_outputs, self.blobs, project.workdir, project.output_dir, events.append)
        finally:
            project.release()
            for payload in events:
                self._append(running, payload)

    async def _follow(self, running: _Running, worker: WorkerProcess) -> tuple[TaskState, str, str, bool]:
        """Relay the worker's messages until the task is done or the worker is gone."""
        spec = running.spec  # a watchdog only for a limit to watch (it wakes every _WATCHDOG_PERIOD while it runs)
        limited = spec.timeout_seconds > 0 or spec.memory_limit_bytes > 0
        watchdog = asyncio.create_task(self._watchdog(running, worker)) if limited else None
        try:
            outcome = await self._relay(running, worker)
        finally:
            if watchdog is not None:
                watchdog.cancel()
        if outcome is not None:
            return outcome
        code = await worker.wait()
        if running.kill_cause:
            status, cause, error = self._killed_outcome(running)
            return status, cause, error, False
        if code == -signal.SIGTERM and not running.preempted:
            # Not the agent's SIGTERM (it sets kill_cause first): the node's own stop, which signalled the agent
            # too (Slurm's end of the step, a pod evicted). Let the agent's stop handler mark it preempted.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(running.ending.wait(), _SIGTERM_SETTLE)
            if running.kill_cause:
                status, cause, error = self._killed_outcome(running)
                return status, cause, error, False
        if running.preempted:  # asked to give the machine back, then killed or exited: re-queued, not failed
            return TaskState.CANCELLED, ExitCause.PREEMPTED, running.preempted, False
        if code < 0:
            name = _signal_name(-code)
            return TaskState.FAILED, ExitCause.SIGNAL, f"worker killed by {name}", False
        if code > 0:
            return TaskState.FAILED, ExitCause.EXIT_CODE, f"worker exited with code {code}", False
        return TaskState.FAILED, ExitCause.WORKER_LOST, "worker exited before the workload finished", False

    async def _relay(self, running: _Running, worker: WorkerProcess) -> tuple[TaskState, str, str, bool] | None:
        """Journal the worker's messages, as many as each read brings, until its `done`: the task's outcome. None
        when its event pipe closed first, or when the task was killed meanwhile (the kill decides then)."""
        while messages := await worker.next_messages():
            for message in messages:
                kind = message.get("t")
                if kind == "trial":  # a bundled trial starts: what follows is its, until its trial_end
                    running.trial = int(message["index"])
                    self._append(running, StateChanged(TaskState.RUNNING, f"trial {running.trial}"))
                    continue
                if kind == "trial_end":
                    for line in str(message.get("traceback", "")).rstrip().splitlines():
                        self._append(running, LogLine("stderr", line))
                    ok, error = message.get("ok") is True, str(message.get("error", ""))
                    self._append(running, TrialEnded(ok, error, float(message.get("seconds", 0.0))))
                    running.trial = -1
                    continue
                if kind == "done":
                    worker.alone = message.get("alone") is True
                    if running.kill_cause:
                        return None
                    if message.get("ok"):
                        return TaskState.SUCCEEDED, ExitCause.COMPLETED, "", True
                    if message.get("stopped") and running.preempted:
                        return TaskState.CANCELLED, ExitCause.PREEMPTED, running.preempted, True
                    if message.get("stopped"):
                        return TaskState.CANCELLED, ExitCause.STOPPED, str(message.get("error", "")), True
                    for line in str(message.get("traceback", "")).rstrip().splitlines():
                        self._append(running, LogLine("stderr", line))
                    cause = message.get("cause")  # a workload may word its failure (a project's command exited)
                    cause = cause if cause in _WORKLOAD_CAUSES else ExitCause.EXCEPTION
                    return TaskState.FAILED, cause, str(message.get("error", "")), True
                for payload in _payloads(message):
                    self._append(running, payload)
                    if isinstance(payload, ArtifactReady | CheckpointSaved):
                        self._adopt(payload.sha256)
        return None

    def _adopt(self, sha256: str) -> None:
        """A blob a worker wrote into the cache (an artifact, a checkpoint): counted in its LRU and the cache kept
        in bounds in the background, one thread hop for all adopted meanwhile (see _ADOPT_PERIOD)."""
        self._adopted.pop(sha256, None)
        self._adopted[sha256] = None  # the latest last: the last the LRU evicts
        if self._adopting is None:
            self._adopting = asyncio.create_task(self._adopt_pending(), name="blob-adopt")

    async def _adopt_pending(self) -> None:
        try:
            while self._adopted:
                batch, self._adopted = list(self._adopted), {}
                try:
                    await asyncio.to_thread(self.blobs.adopt_written, batch)
                except OSError as exc:  # the cache bookkeeping must never fail a task
                    log.warning("blob cache: could not account for %d new blob(s): %s", len(batch), exc)
                await asyncio.sleep(_ADOPT_PERIOD)
        finally:
            self._adopting = None

    def _killed_outcome(self, running: _Running) -> tuple[TaskState, str, str]:
        cancelled = running.kill_cause in (ExitCause.CANCELLED, ExitCause.PREEMPTED)
        status = TaskState.CANCELLED if cancelled else TaskState.FAILED
        return status, running.kill_cause, running.kill_message

    async def _watchdog(self, running: _Running, worker: WorkerProcess) -> None:
        spec = running.spec
        deadline = running.started + spec.timeout_seconds if spec.timeout_seconds > 0 else None
        while worker.alive and not running.kill_cause:
            if deadline is not None and time.monotonic() >= deadline:
                self._kill(running, ExitCause.TIMEOUT, f"wall-clock timeout of {spec.timeout_seconds:g}s exceeded")
            elif spec.memory_limit_bytes > 0:
                rss = worker.rss_bytes()
                if rss > spec.memory_limit_bytes:
                    self._kill(
                        running,
                        ExitCause.MEMORY_LIMIT,
                        f"memory limit exceeded: {rss / 2**20:.0f} MiB resident > "
                        f"{spec.memory_limit_bytes / 2**20:.0f} MiB allowed",
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(running.killed.wait(), _WATCHDOG_PERIOD)

    def _output(self, running: _Running, stream: str, line: str) -> None:
        running.going.set()
        self._append(running, LogLine(stream, line))

    def _append(self, running: _Running, payload: EventPayload) -> None:
        if not running.entry.finished:
            self.journal.append(running.spec.task_id, payload, running.trial)

    def _link_inputs(self, running: _Running) -> None:
        inputs = running.entry.directory / WORK_DIR / "inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        for ref in running.spec.inputs:
            link = inputs / ref.name
            link.unlink(missing_ok=True)
            os.symlink(self.blobs.path(ref.sha256), link)

    # ---- warm workers

    def _pool_key(self, running: _Running, family: bool) -> tuple[str, tuple[int | None, ...], int]:
        """A pool of warm idle workers: its workload family's, shared by every job (see _shared), or its job's; and
        its environment (GPUs, the slot's thread caps)."""
        owner = running.spec.job_id
        if family:
            workload = get_workload(running.spec.workload)
            owner = "\0".join(("family", workload.category, *workload.warm))  # never a job id (no NUL in one)
        return (owner, running.visible_gpus or (None,), sum(s.threads for s in running.slots))

    @staticmethod
    def _shared(running: _Running) -> bool:
        """A built-in workload whose worker may serve another job's task next: our own code, which leaves nothing
        behind that the worker does not reset between tasks (worker.py). Never a user's script or project, nor a
        task with env variables of its own or a share of a GPU (its torch would stay capped to it)."""
        spec = running.spec
        return (
            get_workload(spec.workload).category in _SHARED_FAMILIES
            and not spec.env
            and not running.gpu_share
            and spec.dataset_mount is None
        )

    def _take_parked(self, running: _Running) -> WorkerProcess | None:
        """A warm idle worker of this task's family's pool or of its job's, if one is alive and, for a task with a
        memory limit, holds less than half of it (a worker keeps what its last task left resident; one that holds
        more stays for other tasks)."""
        limit = running.spec.memory_limit_bytes
        for family in (True, False) if self._shared(running) else (False,):
            pool = self._warm.get(self._pool_key(running, family), [])
            for i in range(len(pool) - 1, -1, -1):  # the most recently parked first
                worker = pool[i][0]
                if not worker.alive:
                    del pool[i]
                    self._spawn(worker.close())
                elif not limit or worker.own_rss() <= limit // 2:
                    del pool[i]
                    return worker
        return None

    async def _worker_for(self, running: _Running) -> WorkerProcess:
        if not running.spec.env:
            parked = self._take_parked(running)
            if parked is not None:
                return parked
        # A fork server still starting (the agent's first seconds) is not waited for: spawning is no slower.
        if self._forks is not None and self._forks.done() and not running.spec.env:
            try:
                return await self._fork(running)
            except (OSError, RuntimeError) as exc:
                log.warning("task %s: the fork server failed (%s); spawning its worker", running.spec.task_id, exc)
                self._restart_fork_server()
        if self._spare_fits(running):
            while self._spares:
                spare = self._spares.pop()
                if spare.alive:
                    self._refill_spares(_SPARE_REFILL_DELAY, running.going)
                    return spare
        self._refill_spares()
        return await WorkerProcess.spawn(
            self._worker_env(running), str(running.entry.directory), dict(running.spec.env)
        )

    # ---- the fork server: every task's worker forked from one warm, clean process

    def _start_fork_server(self) -> None:
        if self.config.fork_server and not self.draining:
            env = self._base_env(1)  # caps at 1 while it imports: no BLAS thread; a child raises its own
            self._forks = asyncio.create_task(ForkServer.start(env, str(self.config.data_dir)))

    def _restart_fork_server(self) -> None:
        old, self._forks = self._forks, None
        if old is not None:
            self._spawn(_close_fork_server(old))
        self._start_fork_server()

    async def _fork(self, running: _Running) -> WorkerProcess:
        assert self._forks is not None
        server = await self._forks
        if not server.alive:
            raise RuntimeError("the fork server is gone")
        warm = get_workload(running.spec.workload).warm
        worker = await server.fork(self._worker_env(running), str(running.entry.directory), warm)
        worker.forked = True
        return worker

    async def _recycle_fork_server(self) -> None:
        """A fork server that imported a family's libraries for its tasks holds them (100+ MiB) until it has been
        idle for warm_idle_seconds: then a lean one takes its place."""
        if self._forks is None or not self._forks.done() or self._forks.exception() is not None:
            if self._forks is not None and self._forks.done() and self._forks.exception() is not None:
                self._restart_fork_server()  # it failed to start: try again
            return
        server = self._forks.result()
        if not server.alive:
            self._restart_fork_server()
        elif server.warmed and not server.busy and time.monotonic() - server.last_fork > self.config.warm_idle_seconds:
            log.info("the fork server was idle %.0fs: restarting it lean", self.config.warm_idle_seconds)
            self._restart_fork_server()

    # ---- spare workers: started ahead with the heavy imports done (without the fork server)

    def _spare_fits(self, running: _Running) -> bool:
        """A spare has one CPU slot's thread caps, no GPU and the agent's environment; nothing job-specific."""
        return (
            not running.spec.env
            and len(running.slots) == 1
            and running.slots[0].gpu_index is None
            and running.slots[0].threads == self._cpu_threads()
        )

    def _cpu_threads(self) -> int:
        return next((s.threads for s in self.slots.slots if s.gpu_index is None), 1)

    def _refill_spares(self, delay: float = 0.0, until: asyncio.Event | None = None) -> None:
        if self.config.fork_server:
            return  # every task forks from the fork server instead
        missing = self.config.spare_workers - len(self._spares) - self._spares_starting
        for _ in range(max(0, missing) if not self.draining else 0):
            self._spares_starting += 1
            self._spawn(self._start_spare(delay, until))

    async def _start_spare(self, delay: float = 0.0, until: asyncio.Event | None = None) -> None:
        """Start a spare worker, `delay` seconds from now or once `until` is set if that comes first."""
        try:
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for((until or asyncio.Event()).wait(), delay)
                if self.draining:  # closed or draining meanwhile: no spare any more
                    return
            env = self._base_env(self._cpu_threads())
            worker = await WorkerProcess.spawn(env, str(self.config.data_dir))
        except (OSError, RuntimeError) as exc:
            log.warning("could not start a spare worker: %s", exc)
            return
        finally:
            self._spares_starting -= 1
        worker.send({"op": "preload", "modules": list(_PRELOAD)})
        if self.draining:
            await worker.close()
        else:
            self._spares.append(worker)

    def _park(self, running: _Running, worker: WorkerProcess, succeeded: bool) -> None:
        """Keep a finished task's worker warm for the next task of its pool (built-in workloads only): any job's
        next task of the family when the task succeeded and left nothing running (worker.alone), and its worker has
        not grown (_REUSE_GROWTH); otherwise a spawned worker for the same job's next task. With the fork server,
        the family's pool holds its children only (one spawned while it started serves its job as before): the fork
        server imports a family's libraries for the first task of it that it forks, for the next forks."""
        family = self._shared(running) and (worker.forked or not self.config.fork_server)
        if family:
            if not (succeeded and worker.alone and self._lean(worker)):
                self._spawn(worker.close())
                return
        # A forked worker of anything else serves one task; a sharing task's torch was capped to its share (gpu_cap).
        elif running.spec.env or running.spec.single_task or worker.forked or running.gpu_share:
            self._spawn(worker.close())
            return
        self._warm.setdefault(self._pool_key(running, family), []).append((worker, time.monotonic()))
        idle = sorted(((since, key, w) for key, pool in self._warm.items() for w, since in pool), key=lambda t: t[0])
        while len(idle) > self.slots.total:
            _since, key, oldest = idle.pop(0)
            self._warm[key] = [(w, s) for w, s in self._warm[key] if w is not oldest]
            self._spawn(oldest.close())

    @staticmethod
    def _lean(worker: WorkerProcess) -> bool:
        """Whether a shared worker's resident memory is still about what it was after its first task."""
        rss = worker.own_rss()
        if not worker.first_rss:
            worker.first_rss = rss
        return 0 < rss <= worker.first_rss + _REUSE_GROWTH

    async def _reap_idle_workers(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, min(10.0, self.config.warm_idle_seconds / 2)))
            await self._recycle_fork_server()
            now = time.monotonic()
            for key in list(self._warm):
                keep = []
                for worker, since in self._warm[key]:
                    if now - since > self.config.warm_idle_seconds or not worker.alive:
                        await worker.close()
                    else:
                        keep.append((worker, since))
                if keep:
                    self._warm[key] = keep
                else:
                    del self._warm[key]

    def _base_env(self, threads: int, gpus: tuple[str, ...] = ()) -> dict[str, str]:
        env = dict(os.environ)
        for var in _THREAD_VARS:
            env[var] = str(threads)
        # OpenMP threads that spin while waiting starve everything else on a shared box (several
        # workers, the agent, the desktop): measured 7x slower gradient boosting with two busy workers.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA numbers GPUs as NVML does (gpus.py): the slots' indexes
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _worker_env(self, running: _Running) -> dict[str, str]:
        slots = running.slots
        gpus = tuple(str(index) for index in running.visible_gpus)
        return self._base_env(sum(s.threads for s in slots), gpus)  # the task's own env goes on top in spawn

    def _memory_fraction(self, running: _Running) -> str:
        """A sharing task's share of its GPU's memory (the worker sets it as gpu_cap.ENV: torch workloads and the task
        SDK cap torch's allocator to it); "" for any other task."""
        total = self.slots.gpu_memory.get(running.visible_gpus[0], 0) if running.visible_gpus else 0
        return f"{min(1.0, running.gpu_share / total):.6f}" if running.gpu_share and total else ""

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        """Fire-and-forget, but keep a reference so the task is not garbage-collected mid-flight."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _gauge(self) -> None:
        self.metrics.slots_in_use.set(self.slots.total - self.slots.free)
        self.metrics.tasks_running.set(len(self._running))


class _Killed(Exception):
    pass


async def _close_fork_server(starting: asyncio.Task[ForkServer]) -> None:
    try:
        server = await starting
    except Exception:  # it never started: nothing to close
        return
    await server.retire()


def _payloads(message: dict[str, Any]) -> list[EventPayload]:
    """The task events in one worker message (a report() call's metrics are one message, one event each)."""
    kind = message.get("t")
    if kind == "metrics":
        step, wall_time = int(message["step"]), float(message["wall_time"])
        return [MetricPoint(step, str(name), float(value), wall_time) for name, value in message["values"].items()]
    if kind == "log":
        stream = "stderr" if message.get("stream") == "stderr" else "stdout"  # a worker has only these two
        return [LogLine(stream, str(message.get("line", "")))]
    if kind == "progress":
        return [Progress(float(message["fraction"]))]
    if kind == "artifact":
        return [ArtifactReady(str(message["sha256"]), int(message["size"]), str(message["kind"]), str(message["name"]))]
    if kind == "checkpoint":
        return [
            CheckpointSaved(str(message["sha256"]), int(message["size"]), int(message["step"]), str(message["name"]))
        ]
    return []  # unknown kinds are not task events


def _reproducibility(spec: TaskSpec, versions: dict[str, str]) -> str:
    """The task's one reproducibility line: the worker's package versions, its seeds and, for a bundle, each trial's
    seeds by trial index (one line for the whole bundle: a line per trial would cost each trial a journal record)."""
    seeds = {k: v for k, v in spec.params.items() if k in _SEEDS}
    line = f"reproducibility: versions {json.dumps(versions)} seeds {json.dumps(seeds)}"
    if spec.trials:
        trial_seeds = {t.index: {k: v for k, v in t.params.items() if k in _SEEDS} for t in spec.trials}
        line += f" trial seeds {json.dumps({i: s for i, s in trial_seeds.items() if s}, separators=(',', ':'))}"
    return f"{line} attempt {spec.attempt}"


def _mark_preempted(running: _Running, reason: str) -> None:
    running.preempted = reason or "preempted"
    running.ending.set()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
