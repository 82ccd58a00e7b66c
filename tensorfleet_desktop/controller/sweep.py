"""Hyperparameter sweeps: Optuna ask/tell in the controller, each trial a task (docs/architecture.md,
"The path of a job").

The study lives in memory and is rebuilt from the stored trials after a controller restart, so a
sweep continues where it stopped. Search spaces come from `--sweep PARAM=SPEC`:
`a,b,c` (choices), `int:LO:HI`, `float:LO:HI[:log]`. With `prune`, iterative algorithms' intermediate
test metrics go to Optuna's median pruner, and the controller stops the trials it prunes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.validation import MAX_TRIALS_PER_TASK
from tensorfleet_agent.workloads.registry import WorkloadDef, all_workloads
from tensorfleet_agent.workloads.schema import ParamSpec

log = logging.getLogger(__name__)
SEARCHES = ("grid", "random", "tpe")
_FIELDS = ("params", "search", "trials", "timeout", "metric", "direction", "prune", "trials_per_task")
MAX_TRIALS = 10_000


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: str  # choices | int | float
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False

    def grid(self) -> list[Any]:
        if self.kind == "choices":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        raise ValidationError(f"sweep.params.{self.name}", "a grid search needs choices or an int range, not floats")


@dataclass(frozen=True)
class SweepSpec:
    dimensions: tuple[Dimension, ...]
    search: str = "tpe"
    trials: int = 10
    timeout: float | None = None
    metric: str = "test_accuracy"
    direction: str = "maximize"
    prune: bool = False
    trials_per_task: int = 0  # trials one agent task runs (controller/trials.py, bundle_size); 0: chosen for you

    def to_dict(self) -> dict[str, Any]:
        return {
            "prune": self.prune,
            "trials_per_task": self.trials_per_task,
            "params": {d.name: _spec_text(d) for d in self.dimensions},
            "search": self.search,
            "trials": self.trials,
            "timeout": self.timeout,
            "metric": self.metric,
            "direction": self.direction,
        }


def _spec_text(d: Dimension) -> str:
    if d.kind == "choices":
        return ",".join("null" if c is None else str(c) for c in d.choices)
    return f"{d.kind}:{d.low:g}:{d.high:g}" + (":log" if d.log else "")


def parse_dimension(name: str, text: str, param: ParamSpec) -> Dimension:
    where = f"sweep.params.{name}"
    parts = text.split(":")
    if parts[0] in ("int", "float") and len(parts) in (3, 4):
        try:
            low, high = float(parts[1]), float(parts[2])
        except ValueError:
            raise ValidationError(where, f"{text!r}: bounds must be numbers") from None
        log_scale = len(parts) == 4
        if log_scale and parts[3] != "log":
            raise ValidationError(where, f"{text!r}: the fourth part may only be 'log'")
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise ValidationError(where, f"{text!r}: needs LO < HI")
        if log_scale and low <= 0:
            raise ValidationError(where, f"{text!r}: a log range needs LO > 0")
        if parts[0] == "int" and not (low.is_integer() and high.is_integer()):
            raise ValidationError(where, f"{text!r}: int bounds must be whole numbers")
        if param.type not in ("int", "float") or (parts[0] == "float" and param.type == "int"):
            raise ValidationError(where, f"{name} is a {param.type} parameter; {parts[0]} ranges do not fit it")
        for bound in (low, high):
            param_check(param, int(bound) if param.type == "int" else bound, where)
        return Dimension(name, parts[0], low=low, high=high, log=log_scale)
    import yaml  # here, not at the top: ~20 ms of every controller start, for a list of values only

    values = []
    for raw in text.split(","):
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        if param.type == "str":
            value = raw.strip()
        values.append(param_check(param, value, where))
    if len(values) < 2:
        raise ValidationError(where, f"{text!r}: give at least two choices, or a range like int:1:10")
    return Dimension(name, "choices", choices=tuple(values))


def param_check(param: ParamSpec, value: Any, where: str) -> Any:
    from tensorfleet_agent.workloads.schema import WorkloadSchema

    return WorkloadSchema((param,)).validate({param.name: value}, prefix=where.rsplit(".", 1)[0])[param.name]


def parse_sweep(body: Any, workload: WorkloadDef, regression: bool) -> SweepSpec:
    if not isinstance(body, dict):
        raise ValidationError("sweep", f"must be a mapping with {', '.join(_FIELDS)}")
    for key in body:
        if key not in _FIELDS:
            allowed = ", ".join(_FIELDS)
            raise ValidationError(f"sweep.{key}", f"unknown field (allowed: {allowed})")
    if workload.category != "sklearn":
        raise ValidationError("sweep", f"sweeps run scikit-learn algorithms; {workload.name} is {workload.category}")
    params = body.get("params")
    if not isinstance(params, dict) or not params:
        raise ValidationError("sweep.params", "name at least one parameter to sweep, e.g. C=float:0.01:100:log")
    known = {p.name: p for p in workload.schema.params}
    dims = []
    for name, text in params.items():
        if name not in known:
            raise ValidationError(f"sweep.params.{name}", f"unknown parameter (allowed: {', '.join(sorted(known))})")
        dims.append(parse_dimension(name, str(text), known[name]))
    search = body.get("search", "tpe")
    if search not in SEARCHES:
        raise ValidationError("sweep.search", f"must be one of {', '.join(SEARCHES)}, got {search!r}")
    if search == "grid":
        size = math.prod(len(d.grid()) for d in dims)
        trials = body.get("trials") or size
    else:
        trials = body.get("trials", 10)
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= MAX_TRIALS:
        raise ValidationError("sweep.trials", f"must be an integer between 1 and {MAX_TRIALS}, got {trials!r}")
    timeout = body.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        raise ValidationError("sweep.timeout", f"must be a positive number of seconds, got {timeout!r}")
    default_metric = "r2" if regression else "test_accuracy"
    metric = body.get("metric") or default_metric
    metrics = ("r2", "rmse", "mae", "train_r2") if regression else ("test_accuracy", "f1_macro", "train_accuracy")
    if metric not in metrics:
        raise ValidationError("sweep.metric", f"must be one of {', '.join(metrics)}, got {metric!r}")
    direction = body.get("direction") or ("minimize" if metric in ("rmse", "mae") else "maximize")
    if direction not in ("maximize", "minimize"):
        raise ValidationError("sweep.direction", f"must be maximize or minimize, got {direction!r}")
    prune = body.get("prune", False)
    if not isinstance(prune, bool):
        raise ValidationError("sweep.prune", f"must be true or false, got {prune!r}")
    if prune and not workload.iterative:
        iterative = ", ".join(sorted(w.name for w in all_workloads() if w.iterative))
        raise ValidationError(
            "sweep.prune",
            f"pruning needs intermediate values; {workload.name} reports once, at the end (iterative: {iterative})",
        )
    if prune and metric.startswith("train_"):
        raise ValidationError("sweep.prune", f"{metric} is only known at the end; prune on a test metric")
    per_task = body.get("trials_per_task") or 0
    if isinstance(per_task, bool) or not isinstance(per_task, int) or not 0 <= per_task <= MAX_TRIALS_PER_TASK:
        raise ValidationError(
            "sweep.trials_per_task",
            f"must be an integer between 1 and {MAX_TRIALS_PER_TASK} (or 0 / absent: chosen for you), got {per_task!r}",
        )
    if prune and per_task > 1:
        raise ValidationError("sweep.trials_per_task", "a pruned sweep runs one trial per task (each can be stopped)")
    if timeout and per_task > 1:
        raise ValidationError(
            "sweep.trials_per_task", "a sweep with a timeout runs one trial per task (none may start after it)"
        )
    timeout_s = float(timeout) if timeout else None
    return SweepSpec(tuple(dims), search, trials, timeout_s, metric, direction, prune, per_task)


@dataclass
class Study:
    """One sweep's Optuna study; trials are identified by their number (= the task index)."""

    spec: SweepSpec
    _study: Any = None
    _open: dict[int, Any] = field(default_factory=dict)
    _last_step: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if self.spec.search == "grid":
            space = {d.name: d.grid() for d in self.spec.dimensions}
            sampler: Any = optuna.samplers.GridSampler(space, seed=42)
        elif self.spec.search == "random":
            sampler = optuna.samplers.RandomSampler(seed=42)
        else:
            sampler = optuna.samplers.TPESampler(seed=42, n_startup_trials=min(5, max(1, self.spec.trials // 3)))
        direction = optuna.study.StudyDirection.MAXIMIZE
        if self.spec.direction == "minimize":
            direction = optuna.study.StudyDirection.MINIMIZE
        pruner: Any = optuna.pruners.NopPruner()
        if self.spec.prune:  # judged against completed trials at the same step
            pruner = optuna.pruners.MedianPruner(n_startup_trials=min(5, max(2, self.spec.trials // 4)))
        self._study = optuna.create_study(direction=direction, sampler=sampler, pruner=pruner)

    def distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out: dict[str, Any] = {}
        for d in self.spec.dimensions:
            if d.kind == "choices":
                out[d.name] = CategoricalDistribution(list(d.choices))
            elif d.kind == "int":
                out[d.name] = IntDistribution(int(d.low), int(d.high), log=d.log)
            else:
                out[d.name] = FloatDistribution(d.low, d.high, log=d.log)
        return out

    def ask(self, key: int) -> dict[str, Any]:
        """Parameters for a new trial, remembered under `key` (the task index)."""
        trial = self._study.ask(self.distributions())
        self._open[key] = trial
        return dict(trial.params)

    def resume(self, key: int, params: dict[str, Any]) -> None:
        """A trial that was in flight when the controller restarted: the same parameters, a fresh Optuna trial."""
        self._study.enqueue_trial(params, skip_if_exists=False)
        self._open[key] = self._study.ask(self.distributions())

    def report(self, key: int, step: int, value: float) -> bool:
        """An intermediate value of a running trial; True when the pruner says to stop it."""
        trial = self._open.get(key)
        if trial is None or not math.isfinite(value) or step <= self._last_step.get(key, -1):
            return False  # the final report repeats the last round's step
        self._last_step[key] = step
        trial.report(value, step)
        return bool(trial.should_prune())

    def prune(self, key: int) -> None:
        from optuna.trial import TrialState

        trial = self._open.pop(key, None)
        if trial is not None:
            self._study.tell(trial, state=TrialState.PRUNED)

    def tell(self, key: int, value: float | None) -> None:
        from optuna.trial import TrialState

        trial = self._open.pop(key, None)
        if trial is None:
            return
        if value is None or not math.isfinite(value):
            self._study.tell(trial, state=TrialState.FAIL)
        else:
            self._study.tell(trial, value)

    def replay(self, params: dict[str, Any], value: float | None) -> None:
        """Add a trial finished before a controller restart, so the sampler learns from it."""
        from optuna.trial import TrialState, create_trial

        state = TrialState.COMPLETE if value is not None else TrialState.FAIL
        self._study.add_trial(create_trial(params=params, distributions=self.distributions(), value=value, state=state))


def budget(spec: SweepSpec) -> int:
    """How many trials the sweep runs (a grid never more than its size)."""
    if spec.search == "grid":
        return min(spec.trials, math.prod(len(d.grid()) for d in spec.dimensions))
    return spec.trials


__all__ = ["Dimension", "Study", "SweepSpec", "budget", "parse_sweep"]
