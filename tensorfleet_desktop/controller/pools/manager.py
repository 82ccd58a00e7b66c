"""The pool manager: a CapacitySource that asks Slurm for allocations while queued work needs them.

Each scheduling tick it is offered the queued work no online agent took (capacity.py). A job naming `pool: NAME`
goes to that pool; other work goes to the first pool with room (burst) once it has waited BURST_AFTER and when a
pool's agent could run it (no `on`, no label constraint). A gang of N ranks gets one allocation of N
nodes; other jobs share an allocation of one node that is starting, and a new one is asked only when none of the
pool's allocations is still starting and the pool has room (max_nodes). The agents an allocation starts join by
JoinCluster and exit after the pool's idle timeout, which ends the allocation: the pool scales back to zero.

A poll loop follows the allocations with squeue (ended ones' final state from sacct, for the log), forgets the
agents of ended allocations, and scancels an allocation whose jobs have all ended while it runs nothing, once one of
them was cancelled (or it never started). Nothing here blocks the loop: Slurm's commands run as asyncio
subprocesses in tasks of the manager's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_desktop.controller.capacity import Waiting
from tensorfleet_desktop.controller.errors import JobError, NotFoundError
from tensorfleet_desktop.controller.jobspec import POOL_LABEL, POOL_NAME
from tensorfleet_desktop.controller.pools.credentials import Credentials
from tensorfleet_desktop.controller.pools.script import batch_script, sbatch_args
from tensorfleet_desktop.controller.pools.settings import PoolSettings, check_settings, time_limit_seconds
from tensorfleet_desktop.controller.pools.slurm import SlurmDriver, SlurmError, SlurmJob
from tensorfleet_desktop.controller.scheduler import Capacity, Request, eligible

log = logging.getLogger(__name__)

POLL_ACTIVE = 2.0  # seconds between squeue calls while a pool has allocations
POLL_IDLE = 30.0  # and while it has none (to adopt allocations submitted before a restart)
BURST_AFTER = 10.0  # seconds queued work that names no pool waits for the LAN's agents before a pool is asked
CREDENTIAL_MARGIN = 600.0  # a credential outlives its allocation's time limit by this much
CREDENTIAL_DEFAULT_TTL = 86400.0  # for a pool without a time limit
MAX_CREDENTIAL_TTL = 366 * 86400.0
MAX_MISSING_POLLS = 2  # squeue polls an allocation may be absent from before it counts as ended
SUBMIT_BACKOFF_FIRST = 5.0  # seconds before the next sbatch after one failed, doubling
SUBMIT_BACKOFF_MAX = 300.0
UNFIT_RETRY_FIRST = 600.0  # seconds before a pool whose agents could not run a job is asked for it again, doubling
UNFIT_RETRY_MAX = 3600.0


class Driver(Protocol):
    async def submit(self, script: str, args: Sequence[str]) -> str: ...
    async def queue(self, job_name: str) -> list[SlurmJob]: ...
    async def cancel(self, job_id: str) -> None: ...
    async def final_state(self, job_id: str) -> str: ...


class PoolStore(Protocol):
    def save_pool(self, name: str, body: dict[str, Any]) -> None: ...
    def delete_pool(self, name: str) -> None: ...
    async def load_pools(self) -> dict[str, dict[str, Any]]: ...


class Agents(Protocol):
    """What the manager needs of the fleet: who runs work, and forgetting agents whose allocation ended."""

    def busy(self, node_id: str) -> bool: ...
    async def forget(self, node_id: str) -> None: ...
    def members(self, allocation_id: str) -> list[str]: ...


@dataclass
class Allocation:
    pool: str
    scope: str  # the submission's id, which its credential names
    nodes: int
    gang: bool
    jobs: list[str]  # ids of the jobs it was asked for
    submitted_at: float = field(default_factory=time.time)
    id: str = ""  # the Slurm job id, once sbatch answered
    state: str = "SUBMITTING"
    reason: str = ""
    started_at: float = 0.0
    agents: list[str] = field(default_factory=list)  # node ids of the agents that joined
    cancelling: bool = False
    missing: int = 0  # consecutive polls that did not list it

    def starting(self, online: frozenset[str] | set[str] | None = None) -> bool:
        """Not able to take work yet: submitting, pending, or running without all its agents joined; given the
        node ids of the schedulable agents (`online`), also while one that joined is not schedulable yet (it is
        paired and reports its telemetry a moment after JoinCluster)."""
        if self.state in ("SUBMITTING", "PENDING", "CONFIGURING") or len(self.agents) < self.nodes:
            return True
        return online is not None and any(n not in online for n in self.agents)

    def sentence(self, online: frozenset[str] | set[str] | None = None) -> str:
        """Why a job assigned to this allocation waits, as the user reads it."""
        if not self.id:
            return f"waiting for a Slurm allocation of pool {self.pool} (submitting)"
        if self.state == "PENDING":
            return f"waiting for Slurm allocation {self.id} ({self.reason or 'Pending'})"
        if len(self.agents) < self.nodes:
            return f"waiting for the agents of Slurm allocation {self.id} to join ({self.state})"
        if online is not None and any(n not in online for n in self.agents):
            return f"waiting for the agents of Slurm allocation {self.id} to come online (joined)"
        return f"waiting for a free slot on Slurm allocation {self.id} (pool {self.pool})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "reason": self.reason,
            "nodes": self.nodes,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "agents": list(self.agents),
            "jobs": list(self.jobs),
        }


@dataclass
class _Pool:
    settings: PoolSettings
    driver: Driver
    allocations: list[Allocation] = field(default_factory=list)  # not ended
    error: str = ""
    submit_after: float = 0.0  # monotonic time before which no allocation is asked (after sbatch failed)
    backoff: float = 0.0  # seconds to wait after the next failure (doubling)
    poller: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def nodes_in_use(self) -> int:
        return sum(a.nodes for a in self.allocations)


@dataclass(frozen=True)
class JoinRequest:
    credential: str
    address: str
    node_id: str
    cert_fingerprint: str
    pool: str
    allocation_id: str
    hostname: str


class JoinRefused(Exception):
    """A JoinCluster whose credential does not admit it (UNAUTHENTICATED); the message says why."""


class PoolManager:
    """The pools (settings in the store, allocations in Slurm) and the capacity source that uses them."""

    name = "pools"

    def __init__(
        self,
        store: PoolStore,
        credentials: Credentials,
        controller_address: str,
        agent_command: Callable[[PoolSettings], Sequence[str]],
        job_state: Callable[[str], str | None],
        driver_for: Callable[[PoolSettings], Driver] = lambda p: SlurmDriver(p.login),
        poll_active: float = POLL_ACTIVE,
        poll_idle: float = POLL_IDLE,
    ) -> None:
        self.store = store
        self.credentials = credentials
        self.controller_address = controller_address
        self.agent_command = agent_command  # what starts an agent on one of the pool's nodes
        self.job_state = job_state  # a job's state ("QUEUED", ..., "CANCELLED"), None when unknown
        self.driver_for = driver_for
        self.poll_active, self.poll_idle = poll_active, poll_idle
        self.agents: Agents | None = None
        self.pools: dict[str, _Pool] = {}
        self._assigned: dict[str, Allocation] = {}  # job id -> the allocation it waits for
        # job id -> pool -> (when that pool may be asked for it again, times its agents could not run it, why)
        self._unfit: dict[str, dict[str, tuple[float, int, str]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running = False

    # ---- lifecycle

    async def start(self) -> None:
        self._running = True
        for name, body in sorted((await self.store.load_pools()).items()):
            try:
                settings = check_settings(body)
            except ValidationError as exc:
                log.error("pool %s in the store is unusable and left out: %s", name, exc)
                continue
            self._open(settings)

    async def stop(self) -> None:
        self._running = False
        for pool in self.pools.values():
            if pool.poller is not None:
                pool.poller.cancel()
        tasks = [t for t in self._tasks] + [p.poller for p in self.pools.values() if p.poller is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _open(self, settings: PoolSettings) -> _Pool:
        pool = _Pool(settings, self.driver_for(settings))
        self.pools[settings.name] = pool
        if self._running:
            pool.poller = asyncio.create_task(self._poll(pool), name=f"pool-{settings.name}")
        return pool

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` as the manager's own task (cancelled at stop)."""
        self._spawn(coro)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- settings (the RPCs)

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        settings = check_settings({**body, "created_at": time.time()})
        if settings.name in self.pools:
            raise JobError(f"pool {settings.name} already exists (remove it first to change its settings)")
        self.store.save_pool(settings.name, settings.to_dict())
        log.info("pool %s added (%s partition %s, up to %d node(s))", settings.name, settings.kind,
                 settings.partition, settings.max_nodes)  # fmt: skip
        return self.describe(self._open(settings))

    def get(self, name: str) -> dict[str, Any]:
        return self.describe(self._pool(name))

    def list(self) -> list[dict[str, Any]]:
        return [self.describe(p) for _, p in sorted(self.pools.items())]

    async def remove(self, name: str) -> dict[str, Any]:
        pool = self._pool(name)
        busy = [a.id or "(submitting)" for a in pool.allocations if self._runs_work(a)]
        if busy:
            raise JobError(
                f"pool {name}: allocation(s) {', '.join(busy)} run work; cancel those jobs first, then remove it"
            )
        for alloc in list(pool.allocations):
            if alloc.id:
                with contextlib.suppress(SlurmError):
                    await pool.driver.cancel(alloc.id)
        if pool.poller is not None:
            pool.poller.cancel()
        del self.pools[name]
        for job_id, alloc in list(self._assigned.items()):
            if alloc.pool == name:
                del self._assigned[job_id]
        self.store.delete_pool(name)
        log.info("pool %s removed", name)
        return self.describe(pool)

    def long_lived_credential(self, pool: str, ttl: float) -> dict[str, Any]:
        """A credential for agents an admin starts (a Kubernetes Secret): they join as pool `pool` (its label)."""
        if not POOL_NAME.match(pool):
            raise ValidationError("pool", f"must match [a-z0-9][a-z0-9._-]{{0,62}}, got {pool[:80]!r}")
        if not 0 < ttl <= MAX_CREDENTIAL_TTL:
            raise ValidationError("ttl_seconds", f"must be > 0 and at most 366 days, got {ttl!r}")
        now = time.time()
        log.info("a join credential for pool %s was made, valid %.0f day(s)", pool, ttl / 86400)
        return {"credential": self.credentials.mint(pool, ttl, now=now), "expires_at": now + ttl, "pool": pool}

    def _pool(self, name: str) -> _Pool:
        pool = self.pools.get(name)
        if pool is None:
            known = ", ".join(sorted(self.pools)) or "none"
            raise NotFoundError(f"no pool named {name!r} (pools: {known})")
        return pool

    @staticmethod
    def describe(pool: _Pool) -> dict[str, Any]:
        return {
            **pool.settings.to_dict(),
            "allocations": [a.to_dict() for a in pool.allocations],
            "error": pool.error,
        }

    # ---- the capacity source

    def offer(self, waiting: Sequence[Waiting], online: Sequence[Capacity], now: float) -> dict[str, str]:
        """Assign each waiting job to an allocation (asking Slurm for one when needed); say why it waits."""
        if not self.pools:
            return {}
        reasons: dict[str, str] = {}
        shared: dict[str, Allocation] = {}  # pool -> this tick's new one-node allocation for jobs that are no gang
        ready = {c.node_id for c in online}
        queued = {w.request.job_id for w in waiting}
        for job_id in [j for j in self._unfit if j not in queued]:
            del self._unfit[job_id]  # placed, or ended
        for item in waiting:
            job_id = item.request.job_id
            named = str(item.spec.get("pool") or dict(item.request.labels).get(POOL_LABEL, ""))
            current = self._assigned.get(job_id)
            if current is not None and self._alive(current):
                held = self.pools[current.pool]
                full = held.nodes_in_use() >= held.settings.max_nodes
                if current.starting(ready):
                    reasons[job_id] = current.sentence(ready)
                    continue  # its allocation is coming: it waits for that one
                unfit = self._cannot_run(item.request, current, online)
                if unfit:  # its agents are up and none can run it: not this pool again for a while
                    self._hold_off(job_id, current, unfit, now)
                elif current.gang or full:
                    reasons[job_id] = current.sentence()
                    continue  # the pool cannot grow: it waits for that one
            self._assigned.pop(job_id, None)
            if not named and not self._may_burst(item):
                continue  # plain_reason says why it waits
            if named and named not in self.pools:
                reasons[job_id] = f"pool {named} does not exist (tensorfleet pools list)"
                continue
            candidates = [self.pools[named]] if named else [p for _, p in sorted(self.pools.items())]
            held_off = self._unfit.get(job_id, {})
            usable = [p for p in candidates if held_off.get(p.settings.name, (0.0, 0, ""))[0] <= now]
            if not usable:
                retry_at, _, why = held_off[candidates[0].settings.name]
                reasons[job_id] = f"{why}; pool {candidates[0].settings.name} is asked again in {retry_at - now:.0f} s"
                continue
            candidates = usable
            gang = item.request.gang and len(item.request.ranks) > 1
            need = len(item.request.ranks) if gang else 1
            reason = ""
            for pool in candidates:
                alloc = self._place(pool, job_id, need, gang, shared, ready)
                if alloc is not None:
                    reason = alloc.sentence()
                    break
            if not reason:
                pool = candidates[0]
                limit = pool.settings.max_nodes
                if need > limit:
                    reason = f"pool {pool.settings.name} has at most {limit} node(s); this gang needs {need}"
                else:
                    used = pool.nodes_in_use()
                    reason = (
                        f"waiting for room in pool {pool.settings.name} ({used} of {limit} node(s) allocated"
                        f"{'; ' + pool.error if pool.error else ''})"
                    )
            reasons[job_id] = reason
        return reasons

    @staticmethod
    def _may_burst(item: Waiting) -> bool:
        """Work that names no pool goes to one only when it has waited BURST_AFTER and a pool's agent could take it:
        it names no LAN agent (`on`) and asks no label such an agent lacks (it has only pool=NAME)."""
        request = item.request
        return item.waited >= BURST_AFTER and not request.on and not request.labels

    def _place(
        self, pool: _Pool, job_id: str, need: int, gang: bool, shared: dict[str, Allocation], ready: set[str]
    ) -> Allocation | None:
        """The allocation the job will wait for in this pool (a new one when there is room), or None."""
        name = pool.settings.name
        if not gang:
            starting = shared.get(name) or next(
                (a for a in pool.allocations if not a.gang and not a.cancelling and a.starting(ready)), None
            )
            if starting is not None:
                starting.jobs.append(job_id)
                self._assigned[job_id] = starting
                return starting
        if pool.nodes_in_use() + need > pool.settings.max_nodes or time.monotonic() < pool.submit_after:
            return None
        alloc = Allocation(name, secrets.token_hex(8), need, gang, [job_id])
        pool.allocations.append(alloc)
        self._assigned[job_id] = alloc
        if not gang:
            shared[name] = alloc
        self._spawn(self._submit(pool, alloc))
        return alloc

    def _cannot_run(self, request: Request, alloc: Allocation, online: Sequence[Capacity]) -> str:
        """Why none of the allocation's (schedulable) agents can ever run the request, or "" when one might: it
        lacks the workload or a label, or it runs nothing and still has too few slots or GPUs for a rank."""
        caps = [c for c in online if c.node_id in alloc.agents]
        if not caps:
            return ""
        problems = []
        for cap in caps:
            if request.workload and request.workload not in cap.workloads:
                problems.append(f"agent {cap.name} has no workload {request.workload}")
            elif not eligible(request, cap):
                problems.append(f"agent {cap.name} does not match the job's on/not_on/labels")
            elif self.agents is not None and self.agents.busy(cap.node_id):
                return ""  # it may free what the job needs
            elif request.gpus and (cap.free_gpu_slots < request.gpus or cap.free_slots < request.gpus):
                problems.append(
                    f"agent {cap.name} has {cap.free_gpu_slots} GPU slot(s) and {cap.free_slots} slot(s); "
                    f"a rank needs {request.gpus}"
                )
            elif cap.free_slots < 1:
                problems.append(f"agent {cap.name} has no slot")
            else:
                return ""  # it could: the job waits for its turn
        return f"Slurm allocation {alloc.id} of pool {alloc.pool} cannot run it ({'; '.join(problems)})"

    def _hold_off(self, job_id: str, alloc: Allocation, why: str, now: float) -> None:
        """Its pool is not asked for this job for a while (doubling): the job no longer keeps the allocation."""
        pools = self._unfit.setdefault(job_id, {})
        count = pools.get(alloc.pool, (0.0, 0, ""))[1] + 1
        pools[alloc.pool] = (now + min(UNFIT_RETRY_MAX, UNFIT_RETRY_FIRST * 2 ** (count - 1)), count, why)
        if self._assigned.get(job_id) is alloc:
            del self._assigned[job_id]
        log.warning("pool %s: job %s: %s", alloc.pool, job_id, why)

    def _alive(self, alloc: Allocation) -> bool:
        pool = self.pools.get(alloc.pool)
        return pool is not None and alloc in pool.allocations and not alloc.cancelling

    async def _submit(self, pool: _Pool, alloc: Allocation) -> None:
        settings = pool.settings
        limit = time_limit_seconds(settings.time_limit)
        ttl = (limit + CREDENTIAL_MARGIN) if limit else CREDENTIAL_DEFAULT_TTL
        credential = self.credentials.mint(settings.name, ttl, scope=alloc.scope)
        script = batch_script(settings, self.controller_address, credential, self.agent_command(settings))
        try:
            alloc.id = await pool.driver.submit(script, sbatch_args(settings, alloc.nodes))
        except SlurmError as exc:
            self._back_off(pool, f"cannot submit an allocation: {exc}")
            self._drop(pool, alloc)
            return
        pool.error, pool.backoff = "", 0.0
        alloc.state = "PENDING"
        log.info(
            "pool %s: submitted Slurm allocation %s (%d node(s)) for job(s) %s",
            settings.name, alloc.id, alloc.nodes, ", ".join(alloc.jobs),
        )  # fmt: skip
        pool.wake.set()

    @staticmethod
    def _back_off(pool: _Pool, problem: str) -> None:
        """No new allocation for a while (doubling): the pool's error says why and when it tries again."""
        pool.backoff = min(SUBMIT_BACKOFF_MAX, max(SUBMIT_BACKOFF_FIRST, pool.backoff * 2))
        pool.submit_after = time.monotonic() + pool.backoff
        pool.error = f"{problem} (next try in {pool.backoff:.0f} s)"
        log.warning("pool %s: %s", pool.settings.name, pool.error)

    def _drop(self, pool: _Pool, alloc: Allocation) -> None:
        """The allocation is over (or never was): its jobs are offered again, its agents forgotten."""
        if alloc in pool.allocations:
            pool.allocations.remove(alloc)
        for job_id in alloc.jobs:
            if self._assigned.get(job_id) is alloc:
                del self._assigned[job_id]
        if self.agents is not None:
            for node_id in alloc.agents:
                self._spawn(self.agents.forget(node_id))

    # ---- following the allocations

    async def _poll(self, pool: _Pool) -> None:
        while True:
            try:
                await self.poll_once(pool)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the pool's polling
                log.exception("pool %s: polling failed", pool.settings.name)
            pool.wake.clear()
            delay = self.poll_active if pool.allocations else self.poll_idle
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await pool.wake.wait()

    async def poll_once(self, pool: _Pool) -> None:
        """One squeue: states and reasons updated, ended allocations dropped, finished-with ones cancelled."""
        try:
            listed = {j.id: j for j in await pool.driver.queue(pool.settings.job_name)}
        except SlurmError as exc:
            pool.error = f"cannot read the queue: {exc}"
            return
        pool.error = ""
        known = {a.id for a in pool.allocations if a.id}
        for row in listed.values():  # submitted before a restart: follow it (its agents join again or idle out)
            if row.id not in known and not row.ended:
                log.info("pool %s: following Slurm allocation %s (%s)", pool.settings.name, row.id, row.state)
                adopted = Allocation(pool.settings.name, "", max(1, row.nodes), False, [], row.submitted_at, row.id)
                pool.allocations.append(adopted)
        for alloc in list(pool.allocations):
            if not alloc.id:
                continue  # still submitting
            job = listed.get(alloc.id)
            if job is None or job.ended:
                alloc.missing += 1
                if job is not None or alloc.missing >= MAX_MISSING_POLLS:
                    self._ended(pool, alloc, job.state if job is not None else "")
                continue
            alloc.missing = 0
            alloc.state, alloc.reason = job.state, job.reason
            if self.agents is not None:  # its agents as they report it (those of an adopted one, after a restart)
                alloc.agents += [n for n in self.agents.members(alloc.id) if n not in alloc.agents]
            if job.started_at and not alloc.started_at:
                alloc.started_at = job.started_at
            if self._finished_with(alloc):
                alloc.cancelling = True
                log.info("pool %s: cancelling Slurm allocation %s: its jobs ended", pool.settings.name, alloc.id)
                try:
                    await pool.driver.cancel(alloc.id)
                except SlurmError as exc:
                    alloc.cancelling = False
                    pool.error = f"cannot cancel allocation {alloc.id}: {exc}"

    def _ended(self, pool: _Pool, alloc: Allocation, state: str) -> None:
        self._drop(pool, alloc)
        if alloc.scope and not alloc.agents and not alloc.cancelling:  # ours, and its agent never came
            self._back_off(
                pool,
                f"Slurm allocation {alloc.id} ended{f' ({state})' if state else ''} before its agent joined: check "
                f"that {' '.join(self.agent_command(pool.settings))!r} runs on the nodes and that they reach "
                f"{self.controller_address} (keep the allocation's output with --sbatch-arg=--output=PATH)",
            )
        if state:
            log.info("pool %s: Slurm allocation %s ended (%s)", pool.settings.name, alloc.id, state)
            return

        async def final() -> None:
            ended = await pool.driver.final_state(alloc.id)
            log.info("pool %s: Slurm allocation %s ended (%s)", pool.settings.name, alloc.id, ended or "gone")

        self._spawn(final())

    def _runs_work(self, alloc: Allocation) -> bool:
        if self.agents is not None and any(self.agents.busy(n) for n in alloc.agents):
            return True
        return any(self._assigned.get(j) is alloc and not self._ended_job(j) for j in alloc.jobs)

    def _ended_job(self, job_id: str) -> bool:
        return self.job_state(job_id) in (None, "SUCCEEDED", "FAILED", "CANCELLED")

    def _finished_with(self, alloc: Allocation) -> bool:
        """Cancel it now? Its jobs all ended, none waits for it, its agents run nothing, and one of them was
        cancelled or it never started (finished work otherwise ends it by the agents' idle timeout)."""
        if alloc.cancelling or not alloc.jobs or self._runs_work(alloc):
            return False
        if not all(self._ended_job(j) for j in alloc.jobs):
            return False
        return alloc.state == "PENDING" or any(self.job_state(j) == "CANCELLED" for j in alloc.jobs)

    # ---- JoinCluster

    def admit(self, request: JoinRequest) -> Allocation | None:
        """Check a joining agent's credential: the allocation it belongs to (None for a long-lived credential);
        JoinRefused otherwise."""
        from tensorfleet_agent.security.join_credential import CredentialError

        try:
            claims = self.credentials.verify(request.credential)
        except CredentialError as exc:
            raise JoinRefused(str(exc)) from None
        if request.pool and request.pool != claims.pool:
            raise JoinRefused(f"pool: the credential is for pool {claims.pool}, not {request.pool}")
        if not claims.scope:
            return None  # a long-lived credential (a Kubernetes Secret): its pool is a label
        alloc = next(
            (a for p in self.pools.values() for a in p.allocations if a.scope == claims.scope and not a.cancelling),
            None,
        )
        if alloc is None:
            raise JoinRefused(f"the allocation this credential was made for (pool {claims.pool}) has ended")
        if request.allocation_id and alloc.id and request.allocation_id != alloc.id:
            raise JoinRefused(f"allocation_id: the credential is for Slurm job {alloc.id}, not {request.allocation_id}")
        if request.node_id not in alloc.agents and len(alloc.agents) >= alloc.nodes:
            raise JoinRefused(f"allocation {alloc.id} already has its {alloc.nodes} agent(s)")
        return alloc

    def joined(self, alloc: Allocation | None, node_id: str) -> None:
        if alloc is not None and node_id not in alloc.agents:
            alloc.agents.append(node_id)
            log.info("pool %s: agent %s of allocation %s joined", alloc.pool, node_id[:12], alloc.id)
