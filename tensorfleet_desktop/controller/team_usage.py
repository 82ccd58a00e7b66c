"""Who runs what now, and who used how much lately (issue 24): the scheduling loop's bookkeeping for quotas and fair
share. Every placement is recorded (`placed`), every pass drops the tasks that ended (`check`, costing what runs,
not what waits), every tick accrues usage and every SAVE_EVERY seconds writes the users' usage that changed to the
store's "usage" table (and all of it at stop), so a restart keeps everyone's share.
"""

from __future__ import annotations

from collections.abc import Iterable

from tensorfleet_desktop.controller.fair_share import FairQueue, Holding, Holdings, UsageBook
from tensorfleet_desktop.controller.gpu_share import gpu_amount
from tensorfleet_desktop.controller.model import Job, JobState, JobTask
from tensorfleet_desktop.controller.quotas import Gate, Quotas
from tensorfleet_desktop.controller.store.base import JobStore

SAVE_EVERY = 5.0  # seconds between writes of the usage that changed
RESCAN_EVERY = 30.0  # seconds between full recounts of what runs (a safety net: placements are counted as made)


def user_of(job: Job) -> str:
    """The user a job counts for: its submitter (a job stored before names were users says `user@host`)."""
    return job.submitter.split("@", 1)[0].strip() or job.submitter


class TeamUsage:
    def __init__(self, store: JobStore, quotas: Quotas, half_life: float, *, fair: bool = True) -> None:
        self.fair = fair  # False ([scheduler] fair_share = false): equal priorities go by submit order
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

    def check(self, jobs: dict[str, Job]) -> None:
        """Forget the tasks that ended (or were placed again under another attempt) since the last pass."""
        for attempt, holding in list(self.holdings.tasks.items()):
            job = jobs.get(holding.job_id)
            task = job.tasks[holding.index] if job is not None and holding.index < len(job.tasks) else None
            if task is None or task.agent_task_id != attempt or not task.state.active:
                self.holdings.drop(attempt)

    def rescan(self, jobs: Iterable[Job]) -> None:
        """Count what runs from the tasks' states (at start, and now and then); a task counted at its placement
        keeps the share it was counted with there."""
        known = dict(self.holdings.tasks)
        self.holdings.clear()
        for job in jobs:
            for task in job.tasks:
                if task.state.active and task.agent_task_id:
                    holding = known.get(task.agent_task_id)
                    if holding is not None:
                        self.holdings.add(task.agent_task_id, holding)
                    else:
                        self.placed(job, task)

    def tick(self, now: float, open_jobs: dict[str, Job]) -> None:
        """Accrue usage for what ran since the last tick; save and recount when due."""
        if self._accrued_at is not None and now > self._accrued_at:
            elapsed = now - self._accrued_at
            for user, charge in self.holdings.charges().items():
                if charge > 0:
                    self.usage.add(user, charge * elapsed, now)
        self._accrued_at = now
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
