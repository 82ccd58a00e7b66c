"""Who runs what now, and who used how much lately (issue 24): the scheduling loop's bookkeeping for quotas and fair
share. Every placement is recorded (`placed`), every pass drops the tasks that ended (`check`, costing what runs,
not what waits), every tick accrues usage and every SAVE_EVERY seconds writes the users' usage that changed to the
store's "usage" table (and all of it at stop), so a restart keeps everyone's share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from tensorfleet_desktop.controller import principals
from tensorfleet_desktop.controller.fair_share import FairQueue, Holding, Holdings, UsageBook
from tensorfleet_desktop.controller.gpu_share import gpu_amount, share_bytes
from tensorfleet_desktop.controller.model import Job, JobState, JobTask
from tensorfleet_desktop.controller.ports import AgentView
from tensorfleet_desktop.controller.quotas import Gate, Quotas
from tensorfleet_desktop.controller.store.base import JobStore

SAVE_EVERY = 5.0  # seconds between writes of the usage that changed
RESCAN_EVERY = 30.0  # seconds between full recounts of what runs (a safety net: placements are counted as made)


def user_of(job: Job) -> str:
    """The user a job counts for: its submitter (a job stored before names were users says `user@host`)."""
    return principals.user_of(job.submitter) or job.submitter


class TeamUsage:
    def __init__(
        self,
        store: JobStore,
        quotas: Quotas,
        half_life: float,
        *,
        fair: bool = True,
        agents: Callable[[], list[AgentView]] = list,
        shares: dict[str, tuple[str, int, int]] | None = None,
    ) -> None:
        self.fair = fair  # False ([scheduler] fair_share = false): equal priorities go by submit order
        self.agents = agents  # the agents now (AgentPort.agents): the GPU totals of shares counted without one
        # attempts sharing a GPU by memory counted before their GPU's total was known (UNKNOWN_SHARE: after a
        # restart, or an agent with no GPU telemetry yet): counted again at each tick until it is
        self._unsized: set[str] = set()
        # attempt -> (node id, GPU index, bytes) of the shares dispatched (Attempts.gpu_shares): the GPU the agent
        # says it chose may not be the planned one, nor its total the same; each tick counts a share on its GPU
        self.shares = shares if shares is not None else {}
        self.store = store
        self.quotas = quotas
        self.usage = UsageBook(half_life)
        self.holdings = Holdings()
        self.queue = FairQueue()
        self._accrued_at: float | None = None
        self._saved_at = 0.0
        self._rescanned_at = 0.0

    @property
    def half_life(self) -> float:
        return self.usage.half_life

    async def load(self) -> None:
        self.usage.restore(await self.store.load_team_records("usage"))

    def placed(self, job: Job, task: JobTask, total_memory: int = 0) -> None:
        """A task was dispatched: it holds its GPUs (or slot) until it ends; a task sharing a GPU of `total_memory`
        bytes holds its share of it (unknown: gpu_share's rule)."""
        gpus = gpu_amount(job.spec, total_memory)
        self.holdings.add(task.agent_task_id, Holding(job.id, task.index, user_of(job), gpus))
        if total_memory <= 0 and share_bytes(job.spec, 0) > 0:  # by memory, its GPU's total unknown
            self._unsized.add(task.agent_task_id)
        else:
            self._unsized.discard(task.agent_task_id)

    def check(self, jobs: dict[str, Job]) -> None:
        """Forget the tasks that ended (or were placed again under another attempt) since the last pass."""
        for attempt, holding in list(self.holdings.tasks.items()):
            job = jobs.get(holding.job_id)
            task = job.tasks[holding.index] if job is not None and holding.index < len(job.tasks) else None
            if task is None or task.agent_task_id != attempt or not task.state.active:
                self.holdings.drop(attempt)
                self._unsized.discard(attempt)

    def rescan(self, jobs: Iterable[Job]) -> None:
        """Count what runs from the tasks' states (at start, and now and then); a task counted at its placement
        keeps the share it was counted with there."""
        known = dict(self.holdings.tasks)
        unsized, self._unsized = self._unsized, set()
        self.holdings.clear()
        views: dict[str, AgentView] | None = None
        for job in jobs:
            for task in job.tasks:
                if task.state.active and task.agent_task_id:
                    holding = known.get(task.agent_task_id)
                    if holding is not None and task.agent_task_id not in unsized:
                        self.holdings.add(task.agent_task_id, holding)
                        continue
                    total = 0
                    if share_bytes(job.spec, 0) > 0:  # a share by memory: its agent's GPU total, once known
                        views = views if views is not None else {v.node_id: v for v in self.agents()}
                        total = share_total(job.spec, views.get(task.node_id))
                    self.placed(job, task, total)

    def _size(self, jobs: dict[str, Job]) -> None:
        """Count again the shares counted before their GPU's total was known, now that their agent may say it."""
        views = {v.node_id: v for v in self.agents()}
        for attempt in list(self._unsized):
            holding = self.holdings.tasks.get(attempt)
            job = jobs.get(holding.job_id) if holding is not None else None
            if holding is None or job is None or holding.index >= len(job.tasks):
                self._unsized.discard(attempt)
                continue
            task = job.tasks[holding.index]
            total = share_total(job.spec, views.get(task.node_id))
            if total > 0 and task.agent_task_id == attempt:
                self.placed(job, task, total)

    def _follow_shares(self, jobs: dict[str, Job]) -> None:
        """A share the agent put on another GPU than planned counts on that GPU's total (once its RunTask answered)."""
        views: dict[str, AgentView] | None = None
        for attempt, (node, gpu, _memory) in list(self.shares.items()):
            holding = self.holdings.tasks.get(attempt)
            job = jobs.get(holding.job_id) if holding is not None else None
            if holding is None or job is None or holding.index >= len(job.tasks):
                continue
            if job.tasks[holding.index].agent_task_id != attempt:
                continue
            views = views if views is not None else {v.node_id: v for v in self.agents()}
            view = views.get(node)
            total = next((g.total_memory for g in view.gpus if g.index == gpu), 0) if view is not None else 0
            if total > 0 and abs(gpu_amount(job.spec, total) - holding.gpus) > 1e-9:
                self.placed(job, job.tasks[holding.index], total)

    def tick(self, now: float, open_jobs: dict[str, Job]) -> None:
        """Accrue usage for what ran since the last tick; save and recount when due."""
        if self._accrued_at is not None and now > self._accrued_at:
            elapsed = now - self._accrued_at
            for user, charge in self.holdings.charges().items():
                if charge > 0:
                    self.usage.add(user, charge * elapsed, now)
        self._accrued_at = now
        if self._unsized:
            self._size(open_jobs)
        if self.shares:
            self._follow_shares(open_jobs)
        if now - self._rescanned_at >= RESCAN_EVERY:
            self._rescanned_at = now
            self.rescan(open_jobs.values())
        if now - self._saved_at >= SAVE_EVERY:
            self.save(now)

    def save(self, now: float) -> None:
        """Queue the changed users' usage for the store."""
        self._saved_at = now
        for user in sorted(self.usage.dirty):
            self.store.save_team_record("usage", user, self.usage.record(user))
        self.usage.dirty.clear()

    def gate(self, now: float) -> Gate:
        """One pass's quota checks and fair-share keys."""
        return Gate(
            self.quotas.by_user, self.holdings, lambda user: self.usage.value(user, now), self.half_life, fair=self.fair
        )

    def snapshot(self, open_jobs: Iterable[Job], now: float) -> list[dict[str, float | int | str]]:
        """Each user's holdings, queued jobs, decayed usage and share now (ListQuotas), users with any of these or a
        quota."""
        queued: dict[str, int] = {}
        for job in open_jobs:
            if job.state is JobState.QUEUED:
                queued[user_of(job)] = queued.get(user_of(job), 0) + 1
        users = set(queued) | set(self.holdings.charges()) | set(self.quotas.by_user)
        users |= {u for u in self.usage.users() if self.usage.value(u, now) > 0}
        values = {u: self.usage.value(u, now) for u in users}
        total = sum(values.values())
        return [
            {
                "user": user,
                "running_tasks": self.holdings.running_tasks(user),
                "running_gpus": round(self.holdings.running_gpus(user), 6),
                "queued_jobs": queued.get(user, 0),
                "usage": values[user],
                "share": values[user] / total if total > 0 else 0.0,
            }
            for user in sorted(users)
        ]


def share_total(spec: dict[str, Any], view: AgentView | None) -> int:
    """The total memory of the GPU a running share by memory of `spec` most likely holds on the agent `view` (the
    controller that placed it is gone, and with it the GPU it chose): its GPUs shared with at least that much
    promised, else those it fits on; the smallest of their totals (counting a share high rather than low); 0 when
    the agent says nothing of its GPUs."""
    memory = share_bytes(spec, 0)
    gpus = view.gpus if view is not None else ()
    likely = [g for g in gpus if g.shared_tasks > 0 and g.reserved_memory >= memory and g.total_memory > 0]
    likely = likely or [g for g in gpus if g.total_memory >= memory]
    return min((g.total_memory for g in likely), default=0)
