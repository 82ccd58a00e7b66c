"""Attempts: one try of one task on one agent. Placing it (with its checkpoint, script and data sent ahead),
following its events, cancelling it, pausing it at a checkpoint, and re-attaching to it when its agent (or the
controller) comes back. Agents are reached only through the AgentPort."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from tensorfleet_agent.core.manifest import exchange_order
from tensorfleet_agent.core.project_layout import DEFAULT_OUTPUT_DIR, MANIFEST_INPUT
from tensorfleet_agent.core.types import (
    BlobRef,
    BundledTrial,
    ExitCause,
    Finished,
    PeerSource,
    Rendezvous,
    StateChanged,
    TaskEvent,
    TaskSpec,
    TaskState,
    TrialEnded,
)
from tensorfleet_agent.workloads.datasets import is_user_dataset
from tensorfleet_agent.workloads.registry import get_workload
from tensorfleet_desktop.controller.artifacts import Artifacts
from tensorfleet_desktop.controller.background import Background
from tensorfleet_desktop.controller.dataset_holders import Holders, spread
from tensorfleet_desktop.controller.dataset_push import EMPTY_TRANSFER, DatasetPush, UploadPlan, upload_wants
from tensorfleet_desktop.controller.errors import AgentBusy, AgentCallError, TaskUnknown
from tensorfleet_desktop.controller.events import EventLog
from tensorfleet_desktop.controller.gpu_share import share_bytes, shares_gpu
from tensorfleet_desktop.controller.ingest import Base, Ingest
from tensorfleet_desktop.controller.jobs import CHECKPOINTING, JobMachine
from tensorfleet_desktop.controller.metrics import ControllerMetrics
from tensorfleet_desktop.controller.model import Job, JobState, JobTask, TaskRunState, attempt_id
from tensorfleet_desktop.controller.ports import AgentPort, AgentView, Clock, TicketMaker
from tensorfleet_desktop.controller.project_files import ProjectFiles, ProjectFilesMissing
from tensorfleet_desktop.controller.scheduler import RankLayout
from tensorfleet_desktop.controller.trials import trial_files

log = logging.getLogger(__name__)

_ORPHAN_GRACE = 15.0  # after a restart, how long an unknown agent may take to reappear
_PAUSE_GRACE = 60.0  # how long a pausing task may take to save its checkpoint before it is cancelled
_BUSY_BACKOFF = 0.5  # an agent that did not take an attempt gets no new one for this long, doubled for every
_BUSY_BACKOFF_MAX = 15.0  # further refusal in a row up to this (or until its telemetry shows a free slot again)
_WATCH_RETRY = 0.25  # between tries to re-open an attempt's event stream
HAS_BLOBS_BATCH = 10_000  # sha256s per HasBlobs call (the agent's limit)
PUSH_CONCURRENCY = 4  # project files sent to one agent at once
SHARE_BIG = 1 << 20  # a reader is sent the big blobs (a chunk) of its share one at a time, in order (_send_share)
GATHER = 0.5  # seconds a version's first reader waits for the readers dispatched with it before the share-out
STAGE_CONCURRENCY = 4  # blobs a queued job's staging sends at once (over all its agents)
TICKET_TTL = 1800.0  # seconds a reader's peer ticket is good for (its download; the next dispatch brings another)
_DRAIN_LIMIT = 120.0  # how long an abandoned project attempt is followed for the outputs it saves as it ends


class Attempts:
    def __init__(
        self,
        agents: AgentPort,
        machine: JobMachine,
        events: EventLog,
        ingest: Ingest,
        artifacts: Artifacts,
        metrics: ControllerMetrics,
        clock: Clock,
        background: Background,
        project_files: ProjectFiles,
        holders: Holders | None = None,
        tickets: TicketMaker | None = None,
        peer_transfer: bool = True,
    ) -> None:
        self.agents = agents
        self.holders = holders or Holders()  # which agents hold which dataset blobs (peer-to-peer, issue 20)
        self.tickets = tickets  # signs peer tickets with the controller's key; None: no peer transfer
        self.peer_transfer = peer_transfer  # [datasets] peer_transfer / serve --no-peer-transfer
        self._peerless: set[tuple[str, int]] = set()  # (job, rank) whose last attempt failed SETUP: no peers
        # content id -> the version's blobs no agent holds nor is being sent, for its readers to share (_peer_plan)
        self._rounds: dict[str, dict[str, list[str]]] = {}  # content id -> readers gathering -> blobs no one has
        self._round_closed: dict[str, asyncio.Event] = {}
        self._assigned: dict[str, dict[str, str]] = {}  # content id -> blob -> the reader the controller sends it
        self.staged: set[str] = set()  # jobs whose dataset was staged while they waited (once each)
        self.project_files = project_files
        self.dataset_push = DatasetPush(artifacts.blobs)  # dataset versions' manifests and signed listings
        self.machine = machine
        self.events = events
        self.ingest = ingest
        self.artifacts = artifacts
        self.metrics = metrics
        self.clock = clock
        self.background = background
        self.watchers: dict[str, asyncio.Task[None]] = {}
        # attempts whose RunTask is on its way: the agent may not know them yet, and _run follows them once it does
        self.sending: set[str] = set()
        # agents that (re)appeared and whose running tasks are being listed: nothing new goes there until we know
        self._reconciling: dict[str, int] = {}  # node id -> reconciles under way
        # node id -> attempts dropped only because it was declared lost: taken back if it returns still running them
        self._dropped: dict[str, set[str]] = {}
        # (node id, sha256) -> its push running now: a gang's ranks on one agent send each project file once
        self._pushing: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._push_slots: dict[str, asyncio.Semaphore] = {}  # node id -> PUSH_CONCURRENCY pushes to it at once
        self._started = clock.monotonic()
        # node id -> (refused at, consecutive refusals): an agent that said "busy" gets no attempt for a while
        self._busy: dict[str, tuple[float, int]] = {}
        # attempt -> (node id, GPU index, bytes) of each attempt sent to share a GPU, while its agent holds it for
        # us: placement counts these beside the agent's telemetry, so nothing is promised twice between samples
        self.gpu_shares: dict[str, tuple[str, int, int]] = {}
        # attempt -> the sweep trials riding in its bundle (placement._bundles), by task index: they have no attempt
        # of their own, their events come tagged on this one's stream (Ingest.apply); forgotten at a restart, when
        # JobMachine.restore queues them again
        self.riders: dict[str, dict[int, JobTask]] = {}
        # attempt -> the index of the bundled trial its stream says runs now (a rider's RUNNING, until its
        # TrialEnded), known riders or not (after a restart): a bundle that dies then never reached its lead's own
        self._in_trial: dict[str, int] = {}
        # attempt -> its job and task, for every attempt dispatched or taken back (None until the first reconcile,
        # which fills it from every job: those restored after a restart too); an entry whose task moved on is
        # dropped when read. A reconcile reads it, not every task of every job (200 agents joining a queue of
        # 10,000 jobs looked at 2M tasks)
        self._live: dict[str, tuple[Job, JobTask]] | None = None
        agents.subscribe(self._on_agent)

    def shares_held(self, views: list[AgentView]) -> dict[str, list[tuple[int, int]]]:
        """Node id -> (GPU index, bytes) of the shares dispatched there that the agent still holds for us; the rest
        (ended, released, on an agent gone) are forgotten."""
        placed = {v.node_id: v.placed for v in views}
        out: dict[str, list[tuple[int, int]]] = {}
        for attempt, (node, gpu, memory) in list(self.gpu_shares.items()):
            if attempt in placed.get(node, ()):
                out.setdefault(node, []).append((gpu, memory))
            else:
                del self.gpu_shares[attempt]
        return out

    def resting(self, node_id: str) -> bool:
        """The agent refused an attempt lately (it has less room than we count: a task of ours that ended here may
        still hold its slot): placing there again now would be refused again, so it waits out a back-off."""
        if node_id in self._reconciling:  # it may still run tasks we dropped: take them back first
            return True
        busy = self._busy.get(node_id)
        return busy is not None and self.clock.monotonic() < busy[0] + busy_backoff(busy[1])

    # ---- placing

    def dispatch(
        self,
        job: Job,
        task: JobTask,
        agent: AgentView,
        layout: RankLayout | None = None,
        gpu_share: tuple[int, int] | None = None,
        riders: Sequence[JobTask] = (),
    ) -> None:
        """Start an attempt of the task on the agent; `gpu_share`: (GPU index, bytes) when it shares a GPU;
        `riders`: a sweep's trials its worker runs first, in the same agent task (docs/architecture.md, "Trial
        bundles")."""
        if task.exit_cause == ExitCause.SETUP and job.spec.get("dataset_version"):
            self._peerless.add((job.id, task.index))  # a peer may have failed it: the controller sends it all
        self._seat(task, agent)
        task.agent_task_id = attempt_id(job.id, task.index, task.attempt)
        self.agents.hold(agent.node_id, task.agent_task_id)
        if self._live is not None:
            self._live[task.agent_task_id] = (job, task)
        if gpu_share is not None:
            self.gpu_shares[task.agent_task_id] = (agent.node_id, *gpu_share)
        if job.state is JobState.QUEUED:
            job.state = JobState.RUNNING
            job.started_at = job.started_at or self.clock.time()
            self.events.job_changed(job, "started")
        task.bundle = ""
        self.events.task_event(job, task, f"placed on {agent.name}")
        if riders:
            self.riders[task.agent_task_id] = {r.index: r for r in riders}
            for rider in riders:
                self._seat(rider, agent)
                rider.agent_task_id = ""  # the bundle's attempt is the lead's: cancel, slots and events go by it
                rider.bundle = task.agent_task_id
                base = {"task_index": rider.index}
                message = f"placed on {agent.name} in a bundle with trial {task.index}"
                self.events.record(job, "task_state", base, state=rider.state.value, message=message)
            self.events.store.save_job(job, riders)  # one write for the bundle, not one per rider
        self.sending.add(task.agent_task_id)
        self.background.spawn(self._run(job, task, agent, task.agent_task_id, layout))

    def _seat(self, task: JobTask, agent: AgentView) -> None:
        """What every new attempt of a task starts with, a bundle's lead's and its riders' alike."""
        task.attempt += 1
        task.node_id, task.cursor, task.progress = agent.node_id, 0, 0.0
        task.sklearn_version = agent.sklearn_version
        task.state, task.error, task.exit_cause = TaskRunState.DISPATCHED, "", ""
        task.environment = None  # a project task's env is this attempt's, once its agent says
        task.dataset_transfer = None
        task.started_at, task.finished_at = self.clock.time(), 0.0

    def task_spec(self, job: Job, task: JobTask, layout: RankLayout | None = None) -> TaskSpec:
        spec = job.spec
        local = layout or RankLayout(0, 0, 0, 0)  # local_world_size 0: alone on its agent
        return TaskSpec(
            task_id=task.agent_task_id,
            job_id=job.id,
            workload=str(spec["algorithm"]),
            params=dict(task.params if task.params is not None else spec.get("hyperparameters", {})),
            rank=task.index,
            world_size=len(job.tasks),
            gpus=int(spec.get("gpus", 0)),
            attempt=task.attempt,
            dataset=str(spec.get("dataset", "")),
            dataset_params=dict(spec.get("dataset_params") or {}),
            partition={"cv": "cv", "gang": "gang", "shards": "shard"}.get(job.mode, ""),
            single_task=job.mode == "",
            rendezvous=Rendezvous(**job.rendezvous) if job.mode == "gang" and job.rendezvous else None,
            local_rank=local.local_rank,
            local_world_size=local.local_world_size,
            group_rank=local.group_rank,
            group_world_size=local.group_world_size,
            max_restarts=int(spec.get("max_retries", 2)),
            gpu_memory_bytes=self._gpu_memory(spec, task.agent_task_id),
            trials=tuple(
                BundledTrial(r.index, dict(r.params or {})) for r in self.riders.get(task.agent_task_id, {}).values()
            ),
            trial_files=trial_files(job),
        )

    def _gpu_memory(self, spec: dict[str, Any], attempt: str) -> int:
        """The bytes of GPU memory a sharing task asks its agent for: what placement chose (a fraction turned into
        bytes of that GPU), else its gpu_memory; 0 for a task with whole GPUs (or a fraction of an unknown GPU)."""
        placed = self.gpu_shares.get(attempt)
        if placed is not None:
            return placed[2]
        return share_bytes(spec, 0) if shares_gpu(spec) else 0

    async def _run(
        self, job: Job, task: JobTask, agent: AgentView, attempt: str, layout: RankLayout | None = None
    ) -> None:
        try:
            await self._send(job, task, agent, attempt, layout)
        finally:
            self.sending.discard(attempt)
            if task.agent_task_id != attempt or attempt not in self.watchers:  # the bundle did not start there
                self._unseat(job, attempt)

    def _forget_bundle(self, attempt: str) -> tuple[list[JobTask], int | None]:
        """The attempt's bundle is over for us: the riders still in it (unsettled, not placed again since) and the
        bundled trial its stream last said was running (None: none)."""
        in_trial = self._in_trial.pop(attempt, None)
        left = [r for r in self.riders.pop(attempt, {}).values() if r.state.active and r.bundle == attempt]
        return left, in_trial

    def _unseat(self, job: Job, attempt: str) -> None:
        """The trials riding in an attempt that never started (refused, rejected, abandoned on its way) wait in the
        queue again, nothing spent."""
        left, _ = self._forget_bundle(attempt)
        if left:
            self.machine.requeue(job, left, "its bundle was not started")
            self.machine.wake.set()

    async def _send(
        self, job: Job, task: JobTask, agent: AgentView, attempt: str, layout: RankLayout | None = None
    ) -> None:
        node, sent = agent.node_id, False
        shared: tuple[int, int] | None = None  # the GPU and bytes the agent says it gave a share
        try:
            spec = await self._with_checkpoint(job, task, self.task_spec(job, task, layout), node)
            spec = await self._with_script(job, spec, node)
            spec = await self._with_project(job, task, spec, agent)
            spec = await self._with_dataset(job, task, spec, agent)
            sent = True
            shared, events = await self.agents.run_and_watch(node, spec)
        except ProjectFilesMissing as exc:  # lost from the blob store since the submit: no agent can run it
            if task.agent_task_id == attempt:
                self.agents.release(node, attempt)
                task.exit_cause, task.error, task.finished_at = ExitCause.SETUP, exc.message, self.clock.time()
                task.state = TaskRunState.FAILED
                self.events.record(
                    job, "task_state", {"task_index": task.index}, state=task.state.value, message=exc.message
                )
                self.machine.fail_job(job, task, exc.message)
            return
        except AgentBusy as exc:
            if task.agent_task_id != attempt:
                return
            self._refused(job, task, agent, attempt, exc, maybe_run=sent and exc.maybe_done)
            return
        except AgentCallError as exc:
            if task.agent_task_id == attempt:
                self.agents.release(node, attempt)
                self.machine.task_finished(job, task, Finished(TaskState.FAILED, "rejected", f"{agent.name}: {exc}"))
            return
        self._busy.pop(node, None)
        if shared is not None and attempt in self.gpu_shares:  # the agent's best fit may differ from the plan:
            self.gpu_shares[attempt] = (node, *shared)  # its GPU counts as shared, the planned one no longer
        if task.agent_task_id != attempt:
            # Abandoned (cancelled, paused, re-placed) while RunTask was on its way: the cancel sent then found
            # nothing on the agent, which has started it since. Cancel it again, holding its slot until it stops.
            self.agents.hold(node, attempt)
            self.background.spawn(self._cancel_on_agent(agent, attempt, "abandoned while it was being sent"))
            self.background.spawn(events.aclose())
            return
        self.watch(job, task, attempt, events)

    def _refused(
        self, job: Job, task: JobTask, agent: AgentView, attempt: str, exc: AgentBusy, maybe_run: bool
    ) -> None:
        """The agent did not take the attempt: back to the queue, not counted against the task, and the agent
        rests (busy_backoff) so the task is not offered to it several times a second. An attempt the agent said
        no to is not one: its number and id are used again by the next placement (the agent holds nothing under
        it). One it may have taken (the call timed out) keeps its number and is cancelled there, in case."""
        node = agent.node_id
        self.agents.release(node, attempt)
        refusals = self._busy.get(node, (0.0, 0))[1] + 1
        self._busy[node] = (self.clock.monotonic(), refusals)
        rest = busy_backoff(refusals)
        log.info(
            "agent %s did not take %s (%s); back to the queue, the agent rests %.1fs", agent.name, attempt, exc, rest
        )
        if maybe_run:
            task.stale_attempts.append(attempt)
            self.background.spawn(self._cancel_on_agent(agent, attempt, "not accepted in time"))
        elif job.mode != "gang":  # a gang's other ranks may have started under this number: it moves on
            task.attempt -= 1
        task.state, task.agent_task_id = TaskRunState.PENDING, ""
        self.events.task_event(job, task, f"not accepted by {agent.name}: {exc}")
        self.machine.requeue(job, [task], f"rank {task.index} not accepted by {agent.name}")
        self.machine.wake.set()

    async def _with_dataset(self, job: Job, task: JobTask, spec: TaskSpec, agent: AgentView) -> TaskSpec:
        """User data travels to the agent by content (skipped when its cache has it): a table as an input file, a
        dataset version (`dataset_version`, issue 20) as the blobs its tree is made of or a reference's signed
        listing, named by TaskSpec.dataset_mount; the agent materializes it read-only (TENSORFLEET_DATASET_DIR)."""
        node = agent.node_id
        if is_user_dataset(spec.dataset):
            digest = spec.dataset[len("user:") :]
            await self._send_blob(node, digest)
            spec = dataclasses.replace(spec, inputs=(*spec.inputs, BlobRef(str(spec.dataset_params["file"]), digest)))
        version = job.spec.get("dataset_version")
        if not version:
            return spec
        if version["source"] == "upload":
            peers, ticket, signature = await self._push_version(job, task, version, agent)
            mount = dataclasses.replace(
                self.dataset_push.mount(version, ""), peers=peers, ticket=ticket, ticket_signature=signature
            )
            return dataclasses.replace(spec, dataset_mount=mount)
        listing = await self.dataset_push.signed_listing(version)
        blob = await self.agents.put_bytes(node, listing)  # a few KB per thousand objects; the agent skips a copy
        return dataclasses.replace(spec, dataset_mount=self.dataset_push.mount(version, blob))

    async def _push_version(
        self, job: Job, task: JobTask, version: dict[str, Any], agent: AgentView
    ) -> tuple[tuple[PeerSource, ...], bytes, bytes]:
        """An upload version's manifest, files and chunks the agent lacks onto it (HasBlobs in two rounds, see
        dataset_push.upload_wants), then a task event saying what was sent, how many bytes, how long it took.
        With peer transfer, a blob an online peer holds or is being sent is left to the reader to fetch from it,
        and the reader's own share is pushed while the task starts (the agent waits for it); returns those
        (peers, ticket, signature). See _peer_plan."""
        node, manifest_id = agent.node_id, str(version["content_id"])
        plan = await self.dataset_push.manifest(version)
        whole = sorted({manifest_id} | {e.sha256 for e in plan.entries})
        send, ask = upload_wants(plan, manifest_id, await self._has(node, whole))
        if ask:
            have = await self._has(node, ask)
            send += [sha for sha in ask if sha not in have]
        peers: tuple[PeerSource, ...] = ()
        pushes: dict[str, asyncio.Future[None]] = {}  # the pushes _peer_plan started to the reader
        share: list[str] = []  # the reader's share of what no agent had, pushed by _send_share
        ticket = signature = b""
        started = self.clock.monotonic()
        ref = f"dataset {version['name']}:v{version['version']}"
        if send and self.peer_transfer and self.tickets and (job.id, task.index) not in self._peerless:
            lacking = _mib(sum(plan.sizes.get(sha, 0) for sha in send))
            self.events.task_event(
                job,
                task,
                f"sending {ref} to {agent.name}: {len(send)} blob(s), {lacking}, from peers and the controller",
            )
            pushes, share, peers = await self._peer_plan(job, task, plan, manifest_id, send, agent)
            send = [*pushes, *share]
            if peers:
                ticket, signature = self._ticket(job, node, manifest_id)
        size = sum(plan.sizes.get(sha, 0) for sha in send)
        task.dataset_transfer = {**EMPTY_TRANSFER, "bytes_from_controller": size}
        if not send:
            return peers, ticket, signature  # the agent has it all or gets the rest from peers
        if peers:  # the task starts once the reader has the manifest; the rest arrives while it fetches
            if manifest_id in pushes:
                try:
                    self._raise_lost(ref, plan, await self._pushes_of({manifest_id: pushes.pop(manifest_id)}))
                except BaseException:
                    self._unassign(manifest_id, node, share)  # no longer on their way: others are sent them
                    raise
            report = self._report_share(job, task, ref, agent, manifest_id, plan, pushes, share, started)
            self.background.spawn(report, name=f"share-{job.id}-{task.index}")
            return peers, ticket, signature
        if not pushes and not share:
            self.events.task_event(job, task, f"sending {ref} to {agent.name}: {len(send)} blob(s), {_mib(size)}")
            started = self.clock.monotonic()
        lost = await self._sent(node, manifest_id, plan, pushes, share, send)
        self._raise_lost(ref, plan, lost)
        seconds = self.clock.monotonic() - started
        self.events.task_event(
            job, task, f"sent {ref} to {agent.name}: {len(send)} blob(s), {size} bytes in {seconds:.2f} s"
        )
        log.info("job %s: sent %d blob(s) of %s (%d bytes) to %s", job.id, len(send), ref, size, node[:12])
        return peers, ticket, signature

    async def _sent(
        self,
        node: str,
        manifest_id: str,
        plan: UploadPlan,
        pushes: dict[str, asyncio.Future[None]],
        share: list[str],
        send: list[str],
    ) -> set[str]:
        """Wait for what the controller sends this reader: the pushes _peer_plan started and its share, or (no
        peer transfer) every blob it lacks. Returns the sha256s the blob store no longer has."""
        if not pushes and not share:
            return await self._push_all(node, send)
        results = await asyncio.gather(
            self._pushes_of(pushes), self._send_share(node, manifest_id, share, plan.sizes), return_exceptions=True
        )
        lost: set[str] = set()
        for result in results:
            if isinstance(result, BaseException):
                raise result
            lost |= result
        return lost

    @staticmethod
    def _raise_lost(ref: str, plan: UploadPlan, lost: set[str]) -> None:
        if lost:
            paths = sorted({plan.owners.get(sha, sha[:12]) for sha in lost})
            raise ProjectFilesMissing(
                "dataset",
                f"{len(paths)} file(s) of {ref} are no longer in the controller's blob store "
                f"({', '.join(paths[:5])}{' ...' if len(paths) > 5 else ''}); upload the dataset again",
            )

    async def _report_share(
        self,
        job: Job,
        task: JobTask,
        ref: str,
        agent: AgentView,
        manifest_id: str,
        plan: UploadPlan,
        pushes: dict[str, asyncio.Future[None]],
        share: list[str],
        started: float,
    ) -> None:
        """Send the reader's part from the controller while its task starts; say when it is in (or why not: the
        agent then fails the mount naming the blobs, and the retry gets everything from the controller)."""
        node = agent.node_id
        send = [*pushes, *share]
        size = sum(plan.sizes.get(sha, 0) for sha in send)
        try:
            self._raise_lost(ref, plan, await self._sent(node, manifest_id, plan, pushes, share, send))
        except Exception as exc:
            self.events.task_event(job, task, f"could not send {ref} to {agent.name}: {exc}")
            log.info("job %s: %s not sent to %s: %s", job.id, ref, node[:12], exc)
            return
        seconds = self.clock.monotonic() - started
        self.events.task_event(
            job, task, f"sent {ref} to {agent.name}: {len(send)} blob(s), {size} bytes in {seconds:.2f} s"
        )
        log.info("job %s: sent %d blob(s) of %s (%d bytes) to %s", job.id, len(send), ref, size, node[:12])

    async def _peer_plan(
        self, job: Job, task: JobTask, plan: UploadPlan, manifest_id: str, send: list[str], reader: AgentView
    ) -> tuple[dict[str, asyncio.Future[None]], list[str], tuple[PeerSource, ...]]:
        """Share out what no agent holds among the readers dispatched together, and name the peers the reader
        fetches the rest from: (the pushes to it started here, its share, the peers).

        The blobs of a version that no online agent holds nor is being sent are split among the readers that ask
        within GATHER of the first (the ranks of a job, or jobs close together), each reader's share the blobs
        with the fewest bytes given so far, in exchange_order; so the controller sends one copy. The reader's share
        is not awaited here: it is pushed (_send_share) while the task starts, and the other readers name it as
        the holder: a peer asked for a blob it is receiving waits for it, and one asked too early is asked again
        (agent/runtime/peer_fetch.py), so the exchange overlaps the controller's copy. Each blob the reader lacks
        is named with up to three holders (`spread`: the least loaded first). The manifest always comes from the
        controller (the reader needs it first)."""
        me = reader.node_id
        online = {a.node_id: a for a in self.agents.agents() if a.online and a.node_id != me and a.address}
        assigned = self._assigned.setdefault(manifest_id, {})
        own: dict[str, asyncio.Future[None]] = {}
        if manifest_id in send:
            own[manifest_id] = self._push_future(me, manifest_id)
        needed = [sha for sha in send if sha != manifest_id]

        def held(sha: str) -> set[str]:
            return self.holders.holders(sha, manifest_id, plan.whole.get(sha, "")) & online.keys()

        def coming(sha: str) -> set[str]:
            """The readers it is on its way to (being sent, or in their share)."""
            nodes = {n for n in (*online, me) if (n, sha) in self._pushing}
            if (node := assigned.get(sha)) is not None and (node == me or node in online):
                nodes.add(node)
            return nodes

        unsent = [sha for sha in needed if not held(sha) and not coming(sha)]
        if unsent:
            await self._share_out(manifest_id, plan, me, unsent)
        order = exchange_order(plan.entries)  # the order the readers ask the holders in (agent: datasets._with_peers)
        mine = [sha for sha in needed if assigned.get(sha) == me and (me, sha) not in self._pushing]
        mine.sort(key=lambda s: (order.get(s, len(order)), s))
        holders_of: dict[str, list[str]] = {}
        for sha in needed:
            if (me, sha) in self._pushing:  # staging, or another rank on this agent
                own[sha] = self._pushing[(me, sha)]
                self._unassign(manifest_id, me, [sha])  # (its push is that one)
            elif sha in mine:
                continue
            elif found := held(sha) | (coming(sha) - {me}):
                holders_of[sha] = sorted(found)
            else:  # no one has it nor gets it: from the controller
                own[sha] = self._push_future(me, sha)
        named = spread(holders_of, plan.sizes)
        peers = tuple(
            PeerSource(node, online[node].address, online[node].fingerprint, tuple(sorted(shas)))
            for node, shas in sorted(named.items())
        )
        if peers:
            self.events.task_event(
                job,
                task,
                f"{len(holders_of)} blob(s) ({_mib(sum(plan.sizes.get(s, 0) for s in holders_of))}) of the dataset "
                f"from {len(peers)} peer(s): {', '.join(online[p.node_id].name or p.node_id[:12] for p in peers)}",
            )
        return own, mine, peers

    async def _share_out(self, manifest_id: str, plan: UploadPlan, me: str, unsent: list[str]) -> None:
        """Join the version's share-out (the first reader opens it and closes it after GATHER), then return
        once every blob in it has its reader (self._assigned)."""
        gathering = self._rounds.get(manifest_id)
        if gathering is not None:
            gathering[me] = unsent
            await self._round_closed[manifest_id].wait()
            return
        gathering = self._rounds[manifest_id] = {me: unsent}
        closed = self._round_closed[manifest_id] = asyncio.Event()
        try:
            await asyncio.sleep(GATHER)
        finally:
            del self._rounds[manifest_id], self._round_closed[manifest_id]
            assigned = self._assigned.setdefault(manifest_id, {})
            given = dict.fromkeys(gathering, 0)
            wanted: dict[str, list[str]] = {}
            for node, shas in gathering.items():
                for sha in shas:
                    wanted.setdefault(sha, []).append(node)
            order = exchange_order(plan.entries)  # chunks in file order (each file complete early), then files
            for sha in sorted(wanted, key=lambda s: (order.get(s, len(order)), s)):
                if sha not in assigned:
                    node = min(wanted[sha], key=lambda n: given[n])  # (the first to join wins a tie)
                    assigned[sha] = node
                    given[node] += plan.sizes.get(sha, 0)
            closed.set()

    def _unassign(self, manifest_id: str, node: str, shas: list[str]) -> None:
        """These blobs of the node's share are no longer on their way to it (sent, or given up)."""
        assigned = self._assigned.get(manifest_id)
        if assigned is None:
            return
        for sha in shas:
            if assigned.get(sha) == node:
                del assigned[sha]
        if not assigned:
            del self._assigned[manifest_id]

    async def _send_share(self, node: str, manifest_id: str, share: list[str], sizes: dict[str, int]) -> set[str]:
        """Push a reader's share: the big blobs one at a time in order (each is served to the other readers as
        soon as it is in; several at once would all land late), the small ones PUSH_CONCURRENCY at a time. Each
        blob leaves the version's share-out when its push ends. The first agent error is raised; returns the
        sha256s the blob store no longer has."""
        big = [sha for sha in share if sizes.get(sha, 0) >= SHARE_BIG]
        small = [sha for sha in share if sizes.get(sha, 0) < SHARE_BIG]
        lost: set[str] = set()

        async def in_order() -> None:
            try:
                for sha in big:
                    try:
                        await self._push_once(node, sha)
                    except FileNotFoundError:
                        lost.add(sha)
                    finally:
                        self._unassign(manifest_id, node, [sha])
            finally:
                self._unassign(manifest_id, node, big)  # after a failure the rest are no longer on their way

        async def the_small() -> None:
            try:
                lost.update(await self._push_all(node, small) if small else set())
            finally:
                self._unassign(manifest_id, node, small)

        await asyncio.gather(in_order(), the_small())
        return lost

    def _ticket(self, job: Job, reader: str, content_id: str) -> tuple[bytes, bytes]:
        """What the reader shows its peers: the version it may read, for TICKET_TTL, signed with the controller's
        key (an --insecure agent checks no signature, but the expiry and scope still)."""
        assert self.tickets is not None  # none, no peers (_push_version)
        return self.tickets(reader, [content_id], TICKET_TTL, job.id)

    async def _has(self, node: str, digests: list[str]) -> set[str]:
        have: set[str] = set()
        for start in range(0, len(digests), HAS_BLOBS_BATCH):
            have |= await self.agents.has_blobs(node, digests[start : start + HAS_BLOBS_BATCH])
        self.holders.saw(node, have, set(digests) - have)
        return have

    async def _send_blob(self, node: str, sha256: str) -> None:
        """Get a blob onto an agent: from the object store directly when it can, else through the controller."""
        if sha256 in await self.agents.has_blobs(node, [sha256]):
            return
        await self._push_blob(node, sha256)

    async def _with_script(self, job: Job, spec: TaskSpec, node: str) -> TaskSpec:
        """A script job sends its file to the agent (by content) and names it among the inputs."""
        script = job.spec.get("script")
        if not script:
            return spec
        digest = await self.agents.put_bytes(node, str(script["source"]).encode())
        params = {
            "script": script["name"],
            "args": script["args"],
            "requirements": script["requirements"],
            "sha256": digest,
        }
        return dataclasses.replace(spec, params=params, inputs=(*spec.inputs, BlobRef(script["name"], digest)))

    async def _with_project(self, job: Job, task: JobTask, spec: TaskSpec, agent: AgentView) -> TaskSpec:
        """A project job pushes its manifest and every file the agent lacks (HasBlobs in batches, a few PutBlobs
        at once), then names the manifest among the inputs; the agent materializes the folder from its cache."""
        project = job.spec.get("project")
        if not project:
            return spec
        manifest_id = str(project["manifest_id"])
        node = agent.node_id
        entries = await self.project_files.manifest(manifest_id)
        wanted = sorted({manifest_id} | {e.sha256 for e in entries})
        have: set[str] = set()
        for start in range(0, len(wanted), HAS_BLOBS_BATCH):
            have |= await self.agents.has_blobs(node, wanted[start : start + HAS_BLOBS_BATCH])
        missing = [sha for sha in wanted if sha not in have]
        sizes = {e.sha256: e.size for e in entries}
        files = [sha for sha in missing if sha in sizes]  # the manifest itself is not one of the user's files
        if files:  # pushing can take a while: say so, or the task sits in DISPATCHED with no sign of life
            size = sum(sizes[sha] for sha in files)
            self.events.task_event(
                job, task, f"sending {len(files)} project file(s) ({_mib(size)}) to {agent.name}; "
                f"{len(sizes) - len(files)} already there",
            )  # fmt: skip
        if missing:
            lost = await self._push_all(node, missing)
            if lost:
                paths = [e.path for e in entries if e.sha256 in lost] or [f"the manifest {manifest_id[:12]}"]
                raise ProjectFilesMissing(
                    "project",
                    f"{len(paths)} file(s) of the project are no longer in the controller's blob store "
                    f"({', '.join(paths[:5])}{' ...' if len(paths) > 5 else ''}); submit the project again",
                )
            log.info("job %s: sent %d of %d project blob(s) to %s", job.id, len(missing), len(wanted), node[:12])
        params = {
            "manifest": manifest_id,
            "command": list(job.spec["command"]),
            "env": str(project.get("env") or "auto"),
            "output_dir": DEFAULT_OUTPUT_DIR,
        }
        return dataclasses.replace(spec, params=params, inputs=(*spec.inputs, BlobRef(MANIFEST_INPUT, manifest_id)))

    async def _push_all(self, node: str, missing: list[str]) -> set[str]:
        """Send these blobs to the agent, PUSH_CONCURRENCY at a time; the first agent error stops the rest and is
        raised. Returns the sha256s the blob store no longer has."""
        todo, lost = iter(missing), set()

        async def sender() -> None:
            for sha256 in todo:  # one shared iterator: each blob is taken by one sender
                try:
                    await self._push_once(node, sha256)
                except FileNotFoundError:
                    lost.add(sha256)

        senders = [asyncio.create_task(sender()) for _ in range(min(PUSH_CONCURRENCY, len(missing)))]
        try:
            await asyncio.gather(*senders)
        finally:
            for task in senders:
                task.cancel()
        return lost

    async def _push_once(self, node: str, sha256: str) -> None:
        """Push a blob, or join the push of it to this agent already running (another rank of the gang)."""
        await asyncio.shield(self._push_future(node, sha256))

    def stage(self, job: Job, nodes: list[str]) -> None:
        """A queued job's upload dataset version onto the agents it will likely run on, while it waits (once per
        job): each blob none of them holds is sent to one of them, STAGE_CONCURRENCY at a time, so its dispatch
        later finds holders to name as peers. It stops starting pushes once the job has a task placed or ends."""
        if job.id in self.staged or not nodes:
            return
        self.staged.add(job.id)
        self.background.spawn(self._stage(job, nodes), name=f"stage-{job.id}")

    async def _stage(self, job: Job, nodes: list[str]) -> None:
        version = job.spec["dataset_version"]
        manifest_id = str(version["content_id"])
        try:
            plan = await self.dataset_push.manifest(version)
            lacking: dict[str, list[str]] = {}  # blob -> the agents lacking it
            for node in nodes:
                whole = sorted({manifest_id} | {e.sha256 for e in plan.entries})
                send, ask = upload_wants(plan, manifest_id, await self._has(node, whole))
                if ask:
                    have = await self._has(node, ask)
                    send += [sha for sha in ask if sha not in have]
                for sha in send:
                    lacking.setdefault(sha, []).append(node)
            slots = asyncio.Semaphore(STAGE_CONCURRENCY)

            async def one(node: str, sha: str) -> None:
                async with slots:
                    if job.state.terminal or any(t.state is not TaskRunState.PENDING for t in job.tasks):
                        return  # ended, or being dispatched: its dispatch takes over
                    await asyncio.shield(self._push_future(node, sha))

            online = {a.node_id for a in self.agents.agents() if a.online}
            todo = []
            for sha, want in lacking.items():
                if sha == manifest_id:  # every reader needs it from the controller
                    todo += [one(node, sha) for node in want]
                elif not self.holders.holders(sha, manifest_id, plan.whole.get(sha, "")) & online:
                    todo.append(one(want[int(sha[:8], 16) % len(want)], sha))  # a peer has none: one copy
            await asyncio.gather(*todo, return_exceptions=True)
            log.info("job %s: staged %d blob(s) of its dataset on %d agent(s)", job.id, len(todo), len(nodes))
        except (ProjectFilesMissing, AgentCallError) as exc:
            log.info("job %s: its dataset was not staged: %s", job.id, exc)

    @staticmethod
    async def _pushes_of(pushes: dict[str, asyncio.Future[None]]) -> set[str]:
        """Wait for these pushes (started by _peer_plan; one may be a co-reader's of the same blob to the same
        agent). The first agent error is raised; returns the sha256s the blob store no longer has."""
        results = await asyncio.gather(*(asyncio.shield(f) for f in pushes.values()), return_exceptions=True)
        lost = {sha for sha, r in zip(pushes, results, strict=True) if isinstance(r, FileNotFoundError)}
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, FileNotFoundError):
                raise result
        return lost

    def _push_future(self, node: str, sha256: str) -> asyncio.Future[None]:
        """The push of a blob to an agent, started now unless it is running already."""
        key = (node, sha256)
        running = self._pushing.get(key)
        if running is None:
            running = self._pushing[key] = asyncio.ensure_future(self._push_blob(node, sha256))
            running.add_done_callback(functools.partial(self._pushed, key))
        return running

    def _pushed(self, key: tuple[str, str], done: asyncio.Future[None]) -> None:
        if self._pushing.get(key) is done:
            del self._pushing[key]
        if not done.cancelled() and done.exception() is None:  # retrieved: the ranks that awaited it saw it
            self.holders.saw(*key[:1], [key[1]])

    async def _push_blob(self, node: str, sha256: str) -> None:
        """A blob the agent lacks onto it: from the object store directly when it can, else through the controller
        (FileNotFoundError when the blob store has it no more)."""
        async with self._push_slots.setdefault(node, asyncio.Semaphore(PUSH_CONCURRENCY)):
            await self._push_blob_now(node, sha256)

    async def _push_blob_now(self, node: str, sha256: str) -> None:
        blobs = self.artifacts.blobs
        direct = await blobs.direct_download(sha256)
        if direct is not None:
            try:
                await self.agents.fetch_blob(node, sha256, direct[1], direct[0])
                return
            except AgentCallError as exc:
                log.info("agent could not fetch %s from the object store (%s); sending it", sha256[:12], exc)
        await self.agents.put_blob(node, await blobs.ensure(sha256), sha256)

    async def _with_checkpoint(self, job: Job, task: JobTask, spec: TaskSpec, node: str) -> TaskSpec:
        """A re-placed, retried or resumed torch task continues from the job's latest checkpoint: the newest one
        the controller has (an agent that died right after saving one may never have delivered it; the one
        before it was copied, and going back one checkpoint beats starting over)."""
        checkpoints = [a for a in job.artifacts if a.kind == "checkpoint"]
        if job.mode == "sweep":  # every trial has its own
            checkpoints = [a for a in checkpoints if a.task_index == task.index]
        if not checkpoints or get_workload(spec.workload).category not in CHECKPOINTING:
            return spec
        newest_first = [a for _, _, a in sorted(((a.step, i, a) for i, a in enumerate(checkpoints)), reverse=True)]
        for checkpoint in newest_first:  # of equal steps, the one saved last
            await self.artifacts.copied(checkpoint.sha256, 60)
            try:
                await self._send_blob(node, checkpoint.sha256)
            except FileNotFoundError:
                log.warning(
                    "job %s: the checkpoint of step %d (%s) is not in the blob store (its agent never delivered "
                    "it)", job.id, checkpoint.step, checkpoint.sha256[:12],
                )  # fmt: skip
                continue
            self.events.task_event(job, task, f"resuming from the checkpoint of step {checkpoint.step}")
            return dataclasses.replace(spec, inputs=(*spec.inputs, BlobRef("resume.ckpt", checkpoint.sha256)))
        log.warning("job %s: none of its checkpoints is in the blob store; starting over", job.id)
        return spec

    # ---- following

    def watch(
        self, job: Job, task: JobTask, attempt: str, events: AsyncGenerator[TaskEvent, None] | None = None
    ) -> None:
        """Follow the attempt's events: from `events` (the stream that started it) first, if given."""
        if attempt in self.watchers and not self.watchers[attempt].done():
            if events is not None:
                self.background.spawn(events.aclose())
            return
        self.watchers[attempt] = asyncio.create_task(self._follow(job, task, attempt, events), name=f"watch-{attempt}")

    async def _follow(
        self, job: Job, task: JobTask, attempt: str, first: AsyncGenerator[TaskEvent, None] | None = None
    ) -> None:
        """Stream the attempt's events from its agent (`first`: the call that started it), resuming from the stored
        cursor after any break."""
        try:
            while task.agent_task_id == attempt:
                agent = self.agents.agent(task.node_id)
                if first is None and (agent is None or not agent.online):
                    await asyncio.sleep(_WATCH_RETRY)
                    continue
                events = first if first is not None else self.agents.watch_task(task.node_id, attempt, task.cursor)
                first = None
                try:
                    async for event in events:
                        if task.agent_task_id != attempt:
                            return
                        if event.seq > task.cursor and event.trial >= 0 and event.trial != task.index:
                            self._in_a_trial(attempt, event)
                        riders = self.riders.get(attempt)
                        ended = self.ingest.apply(job, task, event, riders)
                        if ended is None:
                            continue
                        whose, fin, base = ended
                        if whose is task:
                            self.ended(job, task, fin, base)
                            return
                        if riders is not None:  # settled: out of the bundle (a retry of it is another attempt's)
                            riders.pop(whose.index, None)
                        self.machine.task_finished(job, whose, fin, dict(base))  # a rider's trial ended
                except TaskUnknown:
                    if task.agent_task_id == attempt:
                        lost = Finished(TaskState.FAILED, "worker_lost", "the agent no longer knows this task")
                        self.ended(job, task, lost)
                        return
                    await asyncio.sleep(_WATCH_RETRY)
                except AgentCallError:
                    await asyncio.sleep(_WATCH_RETRY)
        finally:
            if self.watchers.get(attempt) is asyncio.current_task():
                del self.watchers[attempt]

    def _in_a_trial(self, attempt: str, event: TaskEvent) -> None:
        if isinstance(event.payload, StateChanged) and event.payload.state is TaskState.RUNNING:
            self._in_trial[attempt] = event.trial
        elif isinstance(event.payload, TrialEnded):
            self._in_trial.pop(attempt, None)

    def ended(self, job: Job, task: JobTask, fin: Finished, base: Base | None = None) -> None:
        attempt = task.agent_task_id
        self.agents.release(task.node_id, attempt)
        left, in_trial = self._forget_bundle(attempt)
        running = [r for r in left if r.state is TaskRunState.RUNNING]
        if (running or in_trial is not None) and fin.status is not TaskState.SUCCEEDED:
            # The bundle ended during a rider's trial (a crash, the memory limit, its timeout): that trial takes the
            # end (one the controller no longer follows, after a restart, was queued again then); the rest, the
            # task's own trial included, never started: queued again, nothing spent.
            for rider in running:
                self.machine.task_finished(job, rider, fin, {"task_index": rider.index})
            task.agent_task_id = ""
            waiting = [t for t in (*left, task) if t not in running]
            self.machine.requeue(job, waiting, f"its bundle ended before it ran ({fin.exit_cause})")
            self.machine.wake.set()
            return
        if left:  # trials of the bundle it never reached (or whose end it did not say): queued again
            self.machine.requeue(job, left, f"its bundle ended before it ran ({fin.exit_cause})")
        self.machine.task_finished(job, task, fin, dict(base) if base else None)

    # ---- stopping

    def abandon(self, job: Job, task: JobTask, reason: str) -> None:
        """Stop caring about the current attempt: cancel it on its agent, never count its result."""
        attempt, node, cursor = task.agent_task_id, task.node_id, task.cursor
        task.stopping = False
        if not attempt:
            return
        task.stale_attempts.append(attempt)
        self._forget_bundle(attempt)  # the job's own transition (cancel, pause, requeue) moves its riders too
        watcher = self.watchers.pop(attempt, None)
        if watcher is not None:
            watcher.cancel()
        agent = self.agents.agent(node)
        if agent is not None:
            if agent.online:
                # The slot stays counted as busy until the agent confirms the task has stopped.
                self.background.spawn(self._cancel_on_agent(agent, attempt, reason))
                if job.spec.get("project"):  # its outputs are collected as it ends, cancelled too: keep them
                    self.background.spawn(self._drain(job, task, node, attempt, cursor), name=f"drain-{attempt}")
            else:
                self.agents.release(node, attempt)
        task.agent_task_id = ""
        self.machine.wake.set()

    async def _drain(self, job: Job, task: JobTask, node: str, attempt: str, after_seq: int) -> None:
        """Follow an abandoned attempt to its end for the files it saves on its way out (Ingest.late)."""
        try:
            async with asyncio.timeout(_DRAIN_LIMIT):
                async for event in self.agents.watch_task(node, attempt, after_seq):
                    if self.ingest.late(job, task, node, event):
                        return
        except (AgentCallError, TimeoutError) as exc:
            log.info("job %s: stopped following %s for its outputs: %s", job.id, attempt, exc or "timed out")

    async def _cancel_on_agent(self, agent: AgentView, attempt: str, reason: str) -> None:
        try:
            await self.agents.cancel_task(agent.node_id, attempt, reason)
        except AgentCallError as exc:
            log.info("could not cancel %s on %s: %s", attempt, agent.name, exc)
        finally:
            self.agents.release(agent.node_id, attempt)
            self.machine.wake.set()

    def checkpoint_and_stop(self, job: Job, task: JobTask) -> bool:
        agent = self.agents.agent(task.node_id)
        if agent is None or not agent.online or not task.agent_task_id:  # a rider stops with its bundle
            return False
        self.background.spawn(self._stop_at_checkpoint(job, task, agent, task.agent_task_id))
        return True

    async def _stop_at_checkpoint(self, job: Job, task: JobTask, agent: AgentView, attempt: str) -> None:
        """Pause one running attempt: the agent asks the workload to checkpoint and stop, and cancels
        it after the grace period. The watcher stays, so the checkpoint and the end are recorded."""
        try:
            await self.agents.cancel_task(agent.node_id, attempt, "paused by the user", _PAUSE_GRACE)
        except AgentCallError as exc:
            if task.agent_task_id == attempt and task.stopping:
                log.info("job %s: could not pause %s at a checkpoint (%s); cancelling it", job.id, attempt, exc)
                self.abandon(job, task, "paused by the user")
                task.state = TaskRunState.PENDING
                self.events.job_changed(job, "progress")

    # ---- agents coming and going

    def _on_agent(self, kind: str, node_id: str) -> None:
        if kind != "telemetry":  # an agent's state may have changed (connected, paired, lost, removed)
            self.metrics.active_workers.set(sum(1 for a in self.agents.agents() if a.online))
        agent = self.agents.agent(node_id)
        if kind == "removed":
            self._busy.pop(node_id, None)
            self._dropped.pop(node_id, None)
            self.holders.forget(node_id)
        if kind == "lost":
            name = agent.name if agent is not None else node_id
            # the jobs with a live attempt there (a bundle's riders run in their lead's), not every job's every task
            suspects = {job.id: job for _, (job, task) in self._live_attempts() if task.node_id == node_id}
            for job in suspects.values():
                on_it = [t for t in job.tasks if t.state.active and t.node_id == node_id]
                waiting = [t for t in on_it if not t.agent_task_id and t.state is TaskRunState.DISPATCHED]
                if waiting and not job.state.terminal:  # riders that never started there: queued, nothing spent
                    self.machine.requeue(job, waiting, f"its bundle's agent {agent.name if agent else node_id} lost")
                    on_it = [t for t in on_it if t not in waiting]
                if on_it and not job.state.terminal:
                    self._dropped.setdefault(node_id, set()).update(t.agent_task_id for t in on_it if t.agent_task_id)
                    log.warning("job %s: agent %s lost; re-placing %d task(s)", job.id, name, len(on_it))
                    self.machine.lose(job, on_it, "agent lost", f"agent {name} lost")
            self.machine.wake.set()
        elif kind in ("added", "back", "paired"):
            self._reconciling[node_id] = self._reconciling.get(node_id, 0) + 1
            self.background.spawn(self._reconcile_then_place(node_id))
            self.machine.wake.set()
        elif kind == "telemetry" and agent is not None:
            busy = self._busy.get(node_id)
            if busy is not None and (agent.reported_slots_free or 0) > 0:
                # it has room again by its own count: the shortest rest is enough
                self._busy[node_id] = (busy[0], 1)
                self.machine.wake.set()
            elif not agent.placed:
                self.machine.wake.set()

    async def _reconcile_then_place(self, node_id: str) -> None:
        try:
            await self.reconcile(node_id)
        finally:
            left = self._reconciling.pop(node_id, 1) - 1
            if left:
                self._reconciling[node_id] = left
            self.machine.wake.set()

    async def reconcile(self, node_id: str) -> None:
        """An agent (re)appeared: re-attach to our current attempts, take back the ones it still runs that were
        dropped when it went silent and not placed again since, cancel attempts we moved on from."""
        current = {}
        for attempt, (job, task) in self._live_attempts():
            if task.node_id == node_id:
                current[attempt] = (job, task)
        for attempt, (job, task) in current.items():
            self.agents.hold(node_id, attempt)
            if attempt not in self.sending:  # its RunTask may not have arrived yet: _run follows it once it has
                self.watch(job, task, attempt)
        agent = self.agents.agent(node_id)
        if agent is None or not agent.connected:
            return
        try:
            running = await self.agents.list_tasks(node_id)
        except AgentCallError:
            return
        dropped = self._dropped.pop(node_id, set())
        for attempt, job_id in running:
            if attempt in current or attempt in self.sending or not job_id.startswith("j"):
                continue
            owner = self.machine.jobs.get(job_id)
            if owner is None:
                continue
            if attempt in dropped and self._take_back(owner, agent, attempt):
                continue
            log.info("cancelling stale attempt %s on %s", attempt, agent.name)
            await self._cancel_on_agent(agent, attempt, "superseded by a newer attempt")

    def _live_attempts(self) -> list[tuple[str, tuple[Job, JobTask]]]:
        """Every current attempt of an active task, with its job and task (what the agents should be running)."""
        if self._live is None:
            self._live = {
                task.agent_task_id: (job, task)
                for job in self.machine.jobs.values()
                for task in job.tasks
                if task.agent_task_id and task.state.active
            }
        jobs = self.machine.jobs
        out = []
        for attempt, (job, task) in list(self._live.items()):
            if task.agent_task_id == attempt and task.state.active and jobs.get(job.id) is job:
                out.append((attempt, (job, task)))
            else:
                del self._live[attempt]  # moved on: ended, abandoned, placed again, its job deleted
        return out

    def _take_back(self, job: Job, agent: AgentView, attempt: str) -> bool:
        """The agent still runs an attempt we dropped only because it was declared lost, and its task waits in the
        queue (not placed anywhere since, not cancelled, paused or retried): follow that attempt again instead of
        running the task a second time."""
        if job.state not in (JobState.QUEUED, JobState.RUNNING) or job.mode == "gang":  # a gang restarts whole
            return False
        task = next((t for t in job.tasks if attempt in t.stale_attempts), None)
        if (
            task is None
            or task.state is not TaskRunState.PENDING
            or task.agent_task_id
            or not task.replacements  # a retry since (it starts the count over) wants a fresh run
            or attempt != attempt_id(job.id, task.index, task.attempt)  # a later attempt was placed since
            or task.node_id != agent.node_id
            or not agent.online
        ):
            return False
        task.stale_attempts.remove(attempt)
        task.agent_task_id = attempt
        task.replacements = max(0, task.replacements - 1)  # it was not lost after all
        task.state = TaskRunState.RUNNING if task.cursor else TaskRunState.DISPATCHED
        self.agents.hold(agent.node_id, attempt)
        if self._live is not None:
            self._live[attempt] = (job, task)
        log.info("job %s: %s is back and still runs %s; following it again", job.id, agent.name, attempt)
        self.events.task_event(job, task, f"{agent.name} is back and still runs it: followed again")
        self.watch(job, task, attempt)
        self.machine.wake.set()
        return True

    def check_orphans(self) -> None:
        """After a restart, tasks whose agent has not come back within the grace period run elsewhere."""
        if self.clock.monotonic() - self._started <= _ORPHAN_GRACE:
            return
        # the jobs with a live attempt on an agent not known (a bundle's riders run on their lead's agent), not
        # every open job's every task each tick
        open_ = self.machine.open
        suspects = {
            job.id: job
            for _, (job, task) in self._live_attempts()
            if open_.get(job.id) is job and self.agents.agent(task.node_id) is None
        }
        for job in suspects.values():
            orphans = [t for t in job.tasks if t.state.active and self.agents.agent(t.node_id) is None]
            if orphans and not job.state.terminal:
                for task in orphans:
                    self.abandon(job, task, "agent unknown after restart")
                    task.state = TaskRunState.FAILED
                self.machine.replace(job, orphans, "its agent did not come back after a controller restart")


def busy_backoff(refusals: int) -> float:
    """Seconds an agent gets no attempt after its `refusals`-th "busy" in a row: 0.5, 1, 2 ... at most 15."""
    return min(_BUSY_BACKOFF_MAX, _BUSY_BACKOFF * 2.0 ** max(0, refusals - 1))


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 // 10 else f"{size / 1024:.1f} KiB"
