"""Sweeps: each sweep job's Optuna study asks for trials while slots are free and its budget lasts, hears each
trial's result, and may prune a trial that reports a hopeless intermediate score."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import threading

from tensorfleet_agent.core import ranking
from tensorfleet_agent.core.types import MetricPoint, TrialFiles
from tensorfleet_agent.workloads.registry import get_workload
from tensorfleet_desktop.controller.events import EventLog
from tensorfleet_desktop.controller.jobs import JobMachine
from tensorfleet_desktop.controller.model import Job, JobState, JobTask, TaskRunState
from tensorfleet_desktop.controller.sweep import Study, parse_sweep


class SweepRunner:
    def __init__(self, machine: JobMachine, events: EventLog) -> None:
        self.machine = machine
        self.events = events
        self._studies: dict[str, Study] = {}
        # Optuna (and the numpy it loads) costs ~0.12 s of CPU to import, 1 s on a loaded box: imported in the
        # background once the controller is up, not on the first sweep's path from submit to its first trial
        threading.Thread(target=_import_optuna, name="import-optuna", daemon=True).start()

    def study(self, job: Job) -> Study:
        """The job's Optuna study; after a restart it is rebuilt from the stored trials."""
        study = self._studies.get(job.id)
        if study is None:
            sweep = {k: v for k, v in job.spec["sweep"].items() if k != "budget"}
            workload = get_workload(str(job.spec["algorithm"]))
            regression = sweep["metric"] in ("r2", "rmse", "mae", "train_r2")
            study = self._studies[job.id] = Study(parse_sweep(sweep, workload, regression))
            metric = str(sweep["metric"])
            for task in job.tasks:
                params = {k: (task.params or {})[k] for k in sweep["params"]}
                if task.state is TaskRunState.SUCCEEDED:
                    study.replay(params, task.metrics.get(metric))
                elif task.state in (TaskRunState.FAILED, TaskRunState.CANCELLED):
                    study.replay(params, None)
                else:
                    study.resume(task.index, params)
        return study

    def forget(self, job: Job) -> None:
        self._studies.pop(job.id, None)

    def tell(self, job: Job, task: JobTask, value: float | None) -> None:
        self.study(job).tell(task.index, value)

    def feed(self, job: Job, parallel: int, slots: int = 0) -> None:
        """Ask Optuna for trials while slots are free (`parallel` of them could run the workload, each taking a
        bundle of bundle_size trials for the `slots` that run it in all) and the budget lasts; finish the job when
        all are in."""
        parallel = max(1, parallel) * bundle_size(job, max(slots, parallel))
        sweep = job.spec["sweep"]
        study = self.study(job)
        in_flight = [t for t in job.tasks if t.state in _IN_FLIGHT]  # one pass per scheduling pass: kept cheap
        # from its first trial's start, else its queueing (a retried sweep's run is a new one), its pauses not counted
        start = job.started_at or job.queued_since or job.created_at
        deadline = start + job.paused_for + float(sweep["timeout"]) if sweep.get("timeout") else None
        expired = deadline is not None and self.machine.clock.time() > deadline
        if expired:
            for task in [t for t in in_flight if t.state is TaskRunState.PENDING]:
                task.state, task.error = TaskRunState.CANCELLED, "sweep timeout"
                study.tell(task.index, None)
                self.events.task_event(job, task, "not started: sweep timeout")
            in_flight = [t for t in in_flight if t.state.active]
        pending = sum(1 for t in in_flight if t.state is TaskRunState.PENDING)
        asked = False
        while not expired and len(job.tasks) < int(sweep["budget"]) and pending < max(1, parallel):
            index = len(job.tasks)
            trial = study.ask(index)
            task = JobTask(index=index, params={**job.spec.get("hyperparameters", {}), **trial})
            job.tasks.append(task)
            pending += 1
            in_flight.append(task)
            base = {"task_index": index}
            self.events.record(job, "task_state", base, state=task.state.value, message=f"trial {index}: {trial}")
            asked = True
        if asked:  # not stored here: each write copies every trial so far, and placing a trial (the same pass,
            # slots being free) stores the job; a trial a restart finds unstored never ran and is asked again
            self.events.touched(job)
        if in_flight or (not expired and len(job.tasks) < int(sweep["budget"])):
            return
        scored = [t for t in job.tasks if score(job, t) is not None]
        best = best_trial(job)
        if best is None:
            self.machine.finish(job, JobState.FAILED, f"no trial succeeded ({len(job.tasks)} tried)")
            return
        job.metrics = {**best.metrics, "best_trial": float(best.index), "trials_completed": float(len(scored))}
        self.machine.succeed(job)
        self._studies.pop(job.id, None)

    def judge(self, job: Job, task: JobTask, point: MetricPoint) -> None:
        """An intermediate score of a running trial: stop it when Optuna judges it hopeless at this step."""
        sweep = job.spec.get("sweep") or {}
        judged = sweep.get("prune") and point.name == sweep["metric"] and task.state.active
        if not judged or not self.study(job).report(task.index, point.step, point.value):
            return
        self.machine.effects.abandon(job, task, "pruned by the sweep")
        task.state, task.exit_cause, task.finished_at = TaskRunState.CANCELLED, "pruned", self.machine.clock.time()
        task.error = (
            f"pruned at step {point.step}: {point.name}={point.value:.4f} "
            "is worse than the median of completed trials at that step"
        )
        self.study(job).prune(task.index)
        self.events.task_event(job, task, f"trial {task.index} {task.error}")
        self.events.progress(job, (task,))
        self.machine.wake.set()


def _import_optuna() -> None:
    with contextlib.suppress(Exception):  # not installed: the first sweep says so
        importlib.import_module("optuna")


_IN_FLIGHT = frozenset(
    {TaskRunState.PENDING, TaskRunState.DISPATCHED, TaskRunState.PREPARING, TaskRunState.RUNNING}
)  # PENDING or active
BUNDLE_MAX = 32  # trials per bundle when chosen for the user (sweep trials_per_task: up to 256)
BUNDLE_MAX_ADAPTIVE = 4  # with TPE, which learns from finished trials: a bundle's trials are drawn before any ends
BUNDLE_ROUNDS = 4  # a sweep's remaining trials make at least this many bundles per slot (a slow one is not last)


def bundle_size(job: Job, slots: int) -> int:
    """How many trials one agent task of this sweep runs (docs/architecture.md, "Trial bundles"): the user's
    trials_per_task, else the budget shared so that each of the `slots` that run it gets BUNDLE_ROUNDS bundles (a
    slow bundle is not the last to end by much), at most BUNDLE_MAX (BUNDLE_MAX_ADAPTIVE for TPE); one for a pruned
    sweep (its trials stop one by one) and for one with a timeout (no trial starts after it: a bundle's riders,
    once sent, would)."""
    sweep = job.spec["sweep"]
    asked = int(sweep.get("trials_per_task") or 0)
    if asked or sweep.get("prune") or sweep.get("timeout"):
        return max(1, asked)
    most = BUNDLE_MAX if sweep.get("search") in ("grid", "random") else BUNDLE_MAX_ADAPTIVE
    return max(1, min(most, int(sweep["budget"]) // (max(1, slots) * BUNDLE_ROUNDS)))


def keep_models(job: Job) -> str:
    """Which trials' models a sweep copies to the blob store and registers: best (the default; also a sweep stored
    before the field existed), all or none."""
    return str(job.spec.get("keep_models") or "best")


def trial_files(job: Job) -> TrialFiles | None:
    """What a sweep's task tells its worker about its trials' files (TaskSpec.trial_files, task.keeps_files): the
    keep_models rule, the order of ranks_before and the best trial so far, so that under best a trial that cannot
    be kept writes no model (a skops dump and a report per trial were most of a small trial's cost; a bundle's first
    trials, which led only their own bundle, were ~half of those written). None for a job of no sweep."""
    if job.mode != "sweep":
        return None
    sweep = job.spec["sweep"]
    files = TrialFiles(keep_models(job), str(sweep["metric"]), sweep["direction"] == "maximize")
    best = best_trial(job) if files.keep == "best" else None
    if best is None:
        return files
    return dataclasses.replace(files, leader_index=best.index, leader_score=float(best.metrics[files.metric]))


def score(job: Job, task: JobTask) -> float | None:
    """A succeeded trial's value of the sweep's metric (None for any other trial)."""
    value = task.metrics.get(str(job.spec["sweep"]["metric"])) if task.state is TaskRunState.SUCCEEDED else None
    return value if value is not None and math.isfinite(value) else None


def ranks_before(job: Job, a: tuple[float, int], b: tuple[float, int]) -> bool:
    """Whether trial a (value, index) beats trial b: a better value, or the same value and a lower index. One
    order for the sweep's final pick, the best-so-far copies (artifacts.py), whatever order trials end in, and a
    bundle's worker keeping a trial's model (agent/core/ranking.py, task.keeps_files)."""
    return ranking.ranks_before(a, b, job.spec["sweep"]["direction"] == "maximize")


def best_trial(job: Job) -> JobTask | None:
    """The sweep's best succeeded trial (see ranks_before)."""
    best: tuple[float, int] | None = None
    chosen = None
    for task in job.tasks:
        value = score(job, task)
        if value is not None and (best is None or ranks_before(job, (value, task.index), best)):
            best, chosen = (value, task.index), task
    return chosen
