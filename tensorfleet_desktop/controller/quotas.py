"""Quotas per user (issue 24): how many tasks and GPUs a user's jobs may hold at once, and how many of their jobs
may wait in the queue. A job over quota waits with the reason as its `waiting` sentence; it never fails.

`Quotas` is the table (the store's "quotas" table, loaded at start); `Gate` checks one scheduling pass's requests
against it, counting what each user runs now plus what the pass placed so far (scheduler.plan asks it per request).
No I/O beyond queueing the store's writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_desktop.controller.errors import NotFoundError
from tensorfleet_desktop.controller.fair_share import Holdings, queue_key
from tensorfleet_desktop.controller.gpu_share import UNKNOWN_SHARE
from tensorfleet_desktop.controller.principals import reserved
from tensorfleet_desktop.controller.scheduler import Request
from tensorfleet_desktop.controller.store.base import JobStore

NO_LIMIT = -1
LIMITS = ("gpus", "tasks", "queued")
MAX_LIMIT = 1_000_000
_EPSILON = 1e-9  # fractions of GPUs add up with float residue: 0.1 * 10 is not 1.0
#: A user's queued jobs held by their `queued` quota that a pass looks at (each gets its reason); the rest of that
#: user's jobs are not read in that pass, so 50,000 held trials cost a pass what 64 do.
HELD_WALK = 64


@dataclass(frozen=True)
class Quota:
    user: str
    gpus: int = NO_LIMIT  # GPUs its running tasks may hold (a shared GPU counts its fraction)
    tasks: int = NO_LIMIT  # tasks it may run at once
    queued: int = NO_LIMIT  # jobs it may have waiting to start; more wait behind them, held

    @property
    def unlimited(self) -> bool:
        return self.gpus < 0 and self.tasks < 0 and self.queued < 0

    def describe(self) -> str:
        """`gpus=4 tasks=8` (the limits it sets), or `none`."""
        return " ".join(f"{name}={getattr(self, name)}" for name in LIMITS if getattr(self, name) >= 0) or "none"

    def to_dict(self) -> dict[str, int | str]:
        return {"user": self.user, "gpus": self.gpus, "tasks": self.tasks, "queued": self.queued}


def check_user(user: str) -> str:
    user = user.strip()
    if not user:
        raise ValidationError("user", "name the user the quota is for")
    if len(user) > 200 or any(not c.isprintable() or c.isspace() for c in user):
        raise ValidationError("user", f"not a user name: {user[:60]!r}")
    if "@" in user:  # jobs count for the user part of user@host (team_usage.user_of): this quota would match none
        raise ValidationError("user", f"name the user without @host: {user.split('@', 1)[0]!r}, not {user[:60]!r}")
    return user


def check_limit(name: str, value: int | None) -> int | None:
    """None: leave it as it is; -1: no limit; else a count >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(name, f"must be a whole number (-1: no limit), got {value!r}")
    if not NO_LIMIT <= value <= MAX_LIMIT:
        raise ValidationError(name, f"must be between 0 and {MAX_LIMIT} (-1: no limit), got {value}")
    return value


class Quotas:
    """The quota table; every change is written to the store's "quotas" table (a user with no limit left: deleted)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.by_user: dict[str, Quota] = {}

    async def load(self) -> None:
        for user, body in (await self.store.load_team_records("quotas")).items():
            try:
                limits = {name: check_limit(name, body.get(name, NO_LIMIT)) for name in LIMITS}
                self.by_user[user] = Quota(user, **{k: NO_LIMIT if v is None else v for k, v in limits.items()})
            except (ValidationError, TypeError):  # a damaged record: no limit rather than no start
                continue

    def get(self, user: str) -> Quota | None:
        return self.by_user.get(user)

    def list(self) -> list[Quota]:
        return [self.by_user[u] for u in sorted(self.by_user)]

    def set(self, user: str, gpus: int | None = None, tasks: int | None = None, queued: int | None = None) -> Quota:
        """Set the given limits of a user (the others stay); -1 removes that limit."""
        user = check_user(user)
        given = {"gpus": check_limit("gpus", gpus), "tasks": check_limit("tasks", tasks)}
        given["queued"] = check_limit("queued", queued)
        old = self.by_user.get(user) or Quota(user)
        quota = Quota(user, **{name: old.__dict__[name] if v is None else v for name, v in given.items()})
        if not quota.unlimited and reserved(user):  # lifting one (stored before names were reserved) stays possible
            raise ValidationError("user", f"{reserved(user)}: not a user's name")
        if quota.unlimited:
            self.by_user.pop(user, None)
            self.store.save_team_record("quotas", user, None)
        else:
            self.by_user[user] = quota
            self.store.save_team_record("quotas", user, quota.to_dict())
        return quota

    def clear(self, user: str) -> Quota:
        """Remove every limit of the user; the quota they had."""
        user = check_user(user)
        quota = self.by_user.pop(user, None)
        if quota is None:
            raise NotFoundError(f"user {user!r} has no quota")
        self.store.save_team_record("quotas", user, None)
        return quota


def rank_gpus(request: Request) -> float:
    """GPUs one rank of the request counts for before its GPU is chosen (gpu_share.gpu_amount's rule: its fraction,
    half a GPU for a share by memory, else whole GPUs). scheduler.plan passes a share by memory's real amount (its
    bytes over the chosen GPU's total) to Gate.allow and Gate.took instead, so a pass counts what placement does."""
    if request.gpu_fraction > 0:
        return request.gpu_fraction
    if request.gpu_memory > 0:
        return UNKNOWN_SHARE
    return float(request.gpus)


class Gate:
    """One pass's quota checks (scheduler.Gate): what each user runs now (`holdings`) plus what this pass placed.
    Also the fair-share key of a user in this pass, so the queue's merge sees each placement at once."""

    def __init__(
        self,
        quotas: dict[str, Quota],
        holdings: Holdings,
        usage: Callable[[str], float],
        half_life: float,
        *,
        fair: bool = True,
    ) -> None:
        self.fair = fair  # False: every user's key is the same, so the per-user queues merge by submit order
        self.quotas = quotas
        self.holdings = holdings
        self.usage = usage  # a user's decayed usage, as of this pass
        self.half_life = half_life
        self.tasks: dict[str, int] = {}  # placed this pass
        self.gpus: dict[str, float] = {}
        self.charge: dict[str, float] = {}
        self.queued: dict[str, int] = {}  # a user's queued jobs seen this pass
        self.cut: set[str] = set()  # users with HELD_WALK held jobs seen: the queue hands out no more of theirs

    def key(self, user: str) -> float:
        if not self.fair:
            return 0.0
        holding = self.holdings.charge(user) + self.charge.get(user, 0.0)
        return queue_key(self.usage(user), holding, self.half_life)

    def running(self, user: str) -> tuple[int, float]:
        return (
            self.holdings.running_tasks(user) + self.tasks.get(user, 0),
            self.holdings.running_gpus(user) + self.gpus.get(user, 0.0),
        )

    def allow(self, request: Request, amounts: Sequence[float] | None = None) -> tuple[int, str]:
        """How many of the request's ranks its user's quota lets it place now, and why not all ("" when all).
        `amounts`: the GPUs each rank takes where it was fitted (a share by memory: its bytes over that GPU's total),
        for that many ranks; else every rank counts rank_gpus()."""
        want = len(request.ranks) if amounts is None else len(amounts)
        quota = self.quotas.get(request.user)
        if quota is None:
            return want, ""
        tasks, gpus = self.running(request.user)
        allowed, reason = want, ""
        whom = request.user
        if quota.tasks >= 0 and tasks + allowed > quota.tasks:
            allowed = max(0, quota.tasks - tasks)
            reason = f"over quota: {whom} runs {tasks} of {quota.tasks} tasks (quota tasks={quota.tasks})"
            if request.gang and tasks < quota.tasks:
                reason = (
                    f"over quota: {whom} runs {tasks} of {quota.tasks} tasks and this gang needs {want} at once "
                    f"(quota tasks={quota.tasks})"
                )
        each = [rank_gpus(request)] * want if amounts is None else list(amounts)
        if quota.gpus >= 0 and sum(each[:allowed]) > 0 and gpus + sum(each[:allowed]) > quota.gpus + _EPSILON:
            room, fit = quota.gpus - gpus + _EPSILON, 0
            while fit < allowed and each[fit] <= room:  # the ranks that fit, in order
                room -= each[fit]
                fit += 1
            allowed = fit
            held = _number(gpus)
            needs = _number(sum(each) if request.gang else each[min(fit, want - 1)])
            reason = (
                f"over quota: {whom} holds {held} of {quota.gpus} GPUs and this job needs {needs} more"
                f"{' at once' if request.gang else ''} (quota gpus={quota.gpus})"
            )
        if request.gang and allowed < want:
            allowed = 0
        return allowed, reason if allowed < want else ""

    def took(self, request: Request, ranks: int, amounts: Sequence[float] | None = None) -> None:
        """`ranks` of the request were placed; `amounts`: the GPUs each of them takes (allow's meaning)."""
        user = request.user
        each = [rank_gpus(request)] * ranks if amounts is None else list(amounts)[:ranks]
        self.tasks[user] = self.tasks.get(user, 0) + ranks
        self.gpus[user] = self.gpus.get(user, 0.0) + sum(each)
        self.charge[user] = self.charge.get(user, 0.0) + sum(per if per > 0 else 1.0 for per in each)

    def queued_job(self, user: str) -> str:
        """A queued (not started) job of `user`, in scheduling order: why it is held ("" if it is not)."""
        seen = self.queued[user] = self.queued.get(user, 0) + 1
        quota = self.quotas.get(user)
        if quota is None or quota.queued < 0 or seen <= quota.queued:
            return ""
        if seen - quota.queued >= HELD_WALK:
            self.cut.add(user)
        return (
            f"over quota: {user} has {quota.queued} queued job{'s' if quota.queued != 1 else ''} ahead of this one "
            f"(quota queued={quota.queued})"
        )


def _number(value: float) -> str:
    return f"{value:g}" if abs(value - round(value)) > _EPSILON else str(round(value))
