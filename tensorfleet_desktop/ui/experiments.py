"""The Jobs table as an experiments table: metric and hyperparameter columns found in the jobs themselves,
column filter expressions (`test_accuracy>0.9 algorithm=random_forest`), group header rows, and a sort that
puts numbers in numeric order with missing values last.

The pure parts (discovery, values, the filter language, group keys) need no Qt; the model and proxy below keep
the model's `rows` the job dicts every other caller reads, adding group headers as extra rows after them.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics
from PySide6.QtWidgets import QHeaderView

from tensorfleet_desktop.ui.formatting import (
    HEADLINE_METRICS,
    best_metric,
    clock,
    compact,
    duration,
    is_number,
    job_agents,
    job_duration,
    job_state,
    job_state_color,
    metric_text,
    workload,
)
from tensorfleet_desktop.ui.plots import is_internal
from tensorfleet_desktop.ui.settings_view import app_settings
from tensorfleet_desktop.ui.table_model import ROW_ROLE, SORT_ROLE, Column, Index, RowTableModel

GROUP_ROLE = Qt.ItemDataRole.UserRole + 20  # the row's group sort key ("" when not grouping)
HEADER_ROLE = Qt.ItemDataRole.UserRole + 21  # True on a group header row

GROUP_MODES = ("none", "sweep", "group", "algorithm", "dataset", "tag")
ACTIVE = ("QUEUED", "PREPARING", "RUNNING", "PAUSED", "PAUSING")
COLUMNS_KEY = "jobs/columns"
GROUP_KEY = "jobs/group"
DEFAULT_DISCOVERED = 4  # metric and hyperparameter columns shown (each) until the user chooses
DEFAULT_TABLE_WIDTH = 1100  # px the default columns may take: the Jobs view of a 1280-1400 px window
BOOKKEEPING = ("best_trial", "trials_completed")  # a sweep's, listed in the chooser but not shown by default
_LAST = "\uffff"  # sorts a "no group" group after the named ones


# ---------------------------------------------------------------- values


_PARAMS: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}  # id(job) -> (job, params): sorts ask often


def job_params(job: dict[str, Any]) -> dict[str, Any]:
    """The job's hyperparameters; a sweep's are its best trial's (the fixed ones plus the swept ones)."""
    cached = _PARAMS.get(id(job))
    if cached is not None and cached[0] is job:  # job dicts are replaced, never changed, when a job changes
        return cached[1]
    if len(_PARAMS) > 4096:
        _PARAMS.clear()
    params = _params(job)
    _PARAMS[id(job)] = (job, params)
    return params


def _params(job: dict[str, Any]) -> dict[str, Any]:
    spec = job.get("spec") or {}
    params = dict(spec.get("hyperparameters") or {})
    best = (job.get("metrics") or {}).get("best_trial")
    if spec.get("sweep") and isinstance(best, int | float):
        for task in job.get("task_list") or ():
            if task.get("index") == int(best) and task.get("params"):
                params.update(task["params"])
    return params


def job_tags(job: dict[str, Any]) -> list[str]:
    return [str(t) for t in (job.get("spec") or {}).get("tags") or ()]


def job_group(job: dict[str, Any]) -> str:
    return str((job.get("spec") or {}).get("group") or "")


def dataset_text(job: dict[str, Any]) -> str:
    """A built-in dataset's name; an upload's reference shortened (jobs carry user:<sha256>, not its name)."""
    value = str(job.get("dataset") or "")
    return f"upload {value[5:17]}" if value.startswith("user:") else value


def sort_value(value: Any) -> Any:
    """What a cell sorts by: numbers as numbers, the rest as lower-case text, None for a missing value."""
    if value is None or value == "":
        return None
    return float(value) if is_number(value) else compact(value).lower()


def discover(jobs: Iterable[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The metric names (headline metrics first) and the hyperparameter names the jobs report."""
    metrics: set[str] = set()
    params: set[str] = set()
    for job in jobs:
        metrics.update(job.get("metrics") or {})
        params.update(job_params(job))
    headline = [m for m in HEADLINE_METRICS if m in metrics]
    return headline + sorted(metrics - set(headline)), sorted(params)


def rank_params(jobs: Iterable[dict[str, Any]], params: Sequence[str]) -> list[str]:
    """The parameters the jobs vary most first (a spec's filled-in defaults, like `random_state`, are the
    same everywhere and tell the runs apart least), then the ones most jobs have, then by name."""
    values: dict[str, set[str]] = {p: set() for p in params}
    counts: dict[str, int] = dict.fromkeys(params, 0)
    for job in jobs:
        have = job_params(job)
        for name in params:
            if name in have:
                values[name].add(compact(have[name]))
                counts[name] += 1

    def key(p: str) -> tuple[bool, int, int, str]:
        constant = len(values[p]) < 2 and counts[p] > 1  # a default filled in everywhere
        return constant, -len(values[p]), -counts[p], p

    return sorted(params, key=key)


# ---------------------------------------------------------------- columns


def _progress(job: dict[str, Any]) -> str:
    tasks = job["tasks"]
    return f"{job['progress'] * 100:.0f}%  ({tasks['completed']}/{tasks['total']})"


def _name_tip(job: dict[str, Any]) -> str:
    lines = [job["id"]]
    if job_group(job):
        lines.append(f"group: {job_group(job)}")
    if job_tags(job):
        lines.append(f"tags: {', '.join(job_tags(job))}")
    return "\n".join([*lines, job["error"]]).strip()


def _state_tip(job: dict[str, Any]) -> str:
    """Why it failed, or why it waits for a placement (job.waiting)."""
    return str(job["error"] or (f"waiting: {job['waiting']}" if job.get("waiting") else ""))


def base_columns() -> list[tuple[Column, bool]]:
    """Every fixed column and whether it shows by default (the first three stay where callers expect them)."""
    return [
        (Column("Name", lambda j: j["name"], tooltip=_name_tip, key="name"), True),
        (Column("Workload", workload, key="workload"), True),
        (Column("State", job_state, tooltip=_state_tip, color=job_state_color, key="state"), True),
        (
            Column("Progress", _progress, sort=lambda j: j["progress"], extra=lambda j: j["progress"], key="progress"),
            True,
        ),
        (Column("Agents", job_agents, key="agents"), False),  # hidden by default: room for the results
        (
            Column("Started", lambda j: clock(j["started_at"]), sort=lambda j: j["started_at"] or 0.0, key="started"),
            False,
        ),
        (
            Column(
                "Duration", lambda j: duration(job_duration(j)), sort=lambda j: job_duration(j) or 0.0, key="duration"
            ),
            True,
        ),
        (
            Column("Best metric", metric_text, sort=lambda j: (best_metric(j) or ("", None))[1], key="best"),
            False,  # the metric columns show the results; room for them
        ),
        (Column("Submitted", lambda j: clock(j["created_at"]), sort=lambda j: j["created_at"], key="submitted"), True),
        (Column("Group", job_group, sort=lambda j: sort_value(job_group(j)), key="group"), False),
        (Column("Tags", lambda j: ", ".join(job_tags(j)), key="tags"), False),
        (Column("Dataset", dataset_text, tooltip=lambda j: str(j.get("dataset") or ""), key="dataset"), False),
        (Column("Algorithm", lambda j: str(j.get("algorithm") or ""), key="algorithm"), False),
        (Column("Job id", lambda j: j["id"], key="id"), False),
    ]


def metric_column(name: str) -> Column:
    def value(job: dict[str, Any]) -> Any:
        return (job.get("metrics") or {}).get(name)

    return Column(
        name,
        lambda j: compact(value(j)),
        sort=lambda j: sort_value(value(j)),
        key=f"metric:{name}",
        header_tip=f"final metric {name} (a sweep: its best trial's)",
    )


def param_column(name: str, title: str) -> Column:
    def value(job: dict[str, Any]) -> Any:
        return job_params(job).get(name)

    return Column(
        title,
        lambda j: compact(value(j)),
        sort=lambda j: sort_value(value(j)),
        key=f"param:{name}",
        header_tip=f"hyperparameter {name} (a sweep: its best trial's)",
    )


HEADER_PADDING = 28  # the section's margins and the sort arrow Fusion draws beside the text
MAX_FITTED_WIDTH = 160


def header_width(header: QHeaderView, title: str, floor: int = 60, cap: int = MAX_FITTED_WIDTH) -> int:
    """A column just wide enough for its header text (values are numbers, narrower than names like
    `test_accuracy`); capped so a long name does not take the table: it elides and its tooltip has it."""
    return max(floor, min(cap, QFontMetrics(header.font()).horizontalAdvance(title) + HEADER_PADDING))


class ColumnChoice:
    """Which columns show: the base ones plus those discovered in the jobs; the user's choice is kept in the
    app's QSettings (a list of column keys, including ones no current job reports)."""

    def __init__(self) -> None:
        self.base = base_columns()
        self.metrics: list[str] = []
        self.params: list[str] = []
        self.informative: list[str] = []  # params, those whose values differ most between the jobs first
        self.width_of: Callable[[str], int] | None = None  # a column key's default width, from the view
        raw = app_settings().value(COLUMNS_KEY, "")
        self.chosen: list[str] | None = None
        try:
            loaded = json.loads(str(raw)) if raw else None
        except ValueError:
            loaded = None
        if isinstance(loaded, list) and all(isinstance(k, str) for k in loaded):
            self.chosen = loaded

    def discover(self, jobs: Iterable[dict[str, Any]]) -> bool:
        """Take the metric and parameter names from `jobs`; True when they changed."""
        jobs = list(jobs)
        found = discover(jobs)
        if found == (self.metrics, self.params):
            return False
        self.metrics, self.params = found
        self.informative = rank_params(jobs, self.params)
        return True

    def available(self) -> list[tuple[str, Column]]:
        """(section, column) for every column the user may choose, in display order."""
        clash = set(self.metrics) | {c.title for c, _ in self.base}
        out = [("Columns", c) for c, _ in self.base]
        out += [("Metrics", metric_column(m)) for m in self.metrics]
        out += [("Hyperparameters", param_column(p, f"{p} (param)" if p in clash else p)) for p in self.params]
        return out

    def default_keys(self) -> list[str]:
        """The base columns shown by default, then up to 4 metrics and 4 hyperparameters, one of each in turn
        while `width_of` (key -> px, set by the view) says they fit DEFAULT_TABLE_WIDTH: none starts off-screen."""
        keys = [c.id for c, shown in self.base if shown]
        results = [m for m in self.metrics if m not in BOOKKEEPING]
        results = [m for m in results if not is_internal(m)]  # epoch, param_checksum, _*: still in the chooser
        metrics = [f"metric:{m}" for m in results[:DEFAULT_DISCOVERED]]
        params = [f"param:{p}" for p in (self.informative or self.params)[:DEFAULT_DISCOVERED]]
        if self.width_of is None:
            return keys + metrics + params
        used = sum(self.width_of(k) for k in keys)
        taken: set[str] = set()
        for key in (k for pair in itertools.zip_longest(metrics, params) for k in pair if k):
            if used + self.width_of(key) > DEFAULT_TABLE_WIDTH and taken:
                break
            used += self.width_of(key)
            taken.add(key)
        return keys + [k for k in metrics + params if k in taken]

    def visible_keys(self) -> list[str]:
        return self.chosen if self.chosen is not None else self.default_keys()

    def visible(self) -> list[Column]:
        keys = set(self.visible_keys())
        columns = [c for _, c in self.available() if c.id in keys]
        return columns or [self.base[0][0]]  # never no column at all

    def set_visible(self, key: str, shown: bool) -> None:
        keys = [k for k in self.visible_keys() if k != key]
        if shown:
            keys.append(key)
        self.chosen = keys
        app_settings().setValue(COLUMNS_KEY, json.dumps(keys))

    def reset(self) -> None:
        self.chosen = None
        app_settings().remove(COLUMNS_KEY)


# ---------------------------------------------------------------- filter expressions

FIELDS = ("name", "id", "state", "algorithm", "workload", "dataset", "group", "tag", "agent", "submitter")
OPS = (">=", "<=", "!=", "==", "=", ">", "<", "~")
_TERM = re.compile(
    r"""\s*(?P<key>[A-Za-z_][\w.\-]*?)\s*(?P<op>>=|<=|!=|==|=|>|<|~)\s*(?P<value>"[^"]*"|'[^']*'|[^\s,"']+)\s*(?:,|\s|$)"""
)


class FilterError(ValueError):
    """A bad column filter; `part` is the piece of the expression at fault."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(f"{part!r}: {message}")
        self.part = part
        self.message = message


@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    value: str

    @property
    def number(self) -> float | None:
        try:
            n = float(self.value)
        except ValueError:
            return None
        return n if math.isfinite(n) else None


def parse_filter(text: str, metrics: Sequence[str] = (), params: Sequence[str] = ()) -> list[Condition]:
    """`test_accuracy>0.9, algorithm=random_forest n_estimators<=100` -> conditions (all must hold). Keys are
    the FIELDS, metric names and hyperparameter names; `=` on text takes * and ? wildcards, `~` means
    "contains"; `<`, `>` need a number."""
    known = set(FIELDS) | {"tags", "agents"} | set(metrics) | set(params)
    out: list[Condition] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        if text[position] in " ,\t":
            position += 1
            continue
        match = _TERM.match(text, position)
        if match is None:
            part = re.split(r"[\s,]", text[position:], maxsplit=1)[0]
            raise FilterError(part, f"expected KEY OP VALUE, e.g. test_accuracy>0.9 (OP: {' '.join(OPS)})")
        key, op, value = match["key"], match["op"], match["value"]
        part = match.group(0).strip(" ,\t")
        if key not in known:
            raise FilterError(part, f"no column {key!r}: use a metric, a hyperparameter or one of {', '.join(FIELDS)}")
        if value[:1] in "\"'":
            value = value[1:-1]
        condition = Condition(key, "=" if op == "==" else op, value)
        if op in ("<", "<=", ">", ">=") and condition.number is None:
            raise FilterError(part, f"{op} needs a number, got {value!r}")
        out.append(condition)
        position = match.end()
    return out


def field_values(job: dict[str, Any], key: str) -> list[Any]:
    """The job's values for a filter key (several for tags and agents; none when it has no such value)."""
    if key == "state":
        return [job_state(job)]
    if key in ("tag", "tags"):
        return list(job_tags(job))
    if key in ("agent", "agents"):
        return sorted({t["agent"] for t in job.get("task_list") or () if t.get("agent")})
    if key == "group":
        return [job_group(job)] if job_group(job) else []
    if key == "workload":
        return [workload(job)]
    if key in ("name", "id", "algorithm", "dataset", "submitter"):
        return [job.get(key) or ""]
    metrics = job.get("metrics") or {}
    if key in metrics:
        return [metrics[key]]
    params = job_params(job)
    return [params[key]] if key in params else []


def _holds(value: Any, condition: Condition) -> bool:
    wanted = condition.number
    have = float(value) if is_number(value) else None
    op = condition.op
    if op in ("<", "<=", ">", ">="):
        if have is None or wanted is None:
            return False
        return {"<": have < wanted, "<=": have <= wanted, ">": have > wanted, ">=": have >= wanted}[op]
    if op == "~":
        return condition.value.casefold() in compact(value).casefold()
    if have is not None and wanted is not None:
        return math.isclose(have, wanted, rel_tol=1e-9, abs_tol=1e-12)
    return fnmatch.fnmatchcase(compact(value).casefold(), condition.value.casefold())


def matches(job: dict[str, Any], conditions: Sequence[Condition]) -> bool:
    for condition in conditions:
        values = field_values(job, condition.key)
        if condition.op == "!=":
            if any(_holds(v, Condition(condition.key, "=", condition.value)) for v in values):
                return False
        elif not any(_holds(v, condition) for v in values):
            return False
    return True


# ---------------------------------------------------------------- grouping


def group_of(job: dict[str, Any], mode: str) -> tuple[str, str]:
    """(sort key, header label) of the job's group; a sweep is one job, so "sweep" groups sweeps by their name
    and puts every other job under "not a sweep"."""
    if mode == "sweep":
        if (job.get("spec") or {}).get("sweep"):
            return f"0{job['name']}", f"sweep {job['name']}"
        return _LAST, "not a sweep"
    if mode == "group":
        group = job_group(job)
        return (f"0{group.casefold()}", f"group {group}") if group else (_LAST, "no group")
    if mode == "tag":  # a job with several tags shows once, under its first
        tags = job_tags(job)
        return (f"0{tags[0].casefold()}", f"tag {tags[0]}") if tags else (_LAST, "no tags")
    if mode in ("algorithm", "dataset"):
        value = dataset_text(job) if mode == "dataset" else str(job.get(mode) or "")
        return (f"0{value}", f"{mode} {value}") if value else (_LAST, f"no {mode}")
    return "", ""


class JobsModel(RowTableModel):
    """The jobs (its `rows`, as callers read them) followed by one header row per group when grouping."""

    def __init__(self, columns: Sequence[Column]) -> None:
        super().__init__(columns)
        self.mode = "none"
        self.headers: list[dict[str, Any]] = []  # {"key", "label", "count"}

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self.rows) + len(self.headers)

    def flags(self, index: Index) -> Qt.ItemFlag:
        if index.isValid() and index.row() >= len(self.rows):
            return Qt.ItemFlag.ItemIsEnabled  # a header: not selectable, so actions see only jobs
        return super().flags(index)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        if index.row() >= len(self.rows):
            return self._header_data(self.headers[index.row() - len(self.rows)], index.column(), role)
        job = self.rows[index.row()]
        if role == GROUP_ROLE:
            return group_of(job, self.mode)[0]
        if role == HEADER_ROLE:
            return False
        return self.cell(job, self.columns[index.column()], role)

    def _header_data(self, header: dict[str, Any], column: int, role: int) -> Any:
        if role == GROUP_ROLE:
            return header["key"]
        if role == HEADER_ROLE:
            return True
        if role == Qt.ItemDataRole.DisplayRole and column == 0:
            count = header["count"]
            return f"{header['label']}  ·  {count} job{'' if count == 1 else 's'}"
        if role == Qt.ItemDataRole.FontRole:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.BackgroundRole:
            return QColor(128, 128, 128, 48)  # a tint that reads on light and dark palettes
        return None

    def set_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        super().set_rows(rows)
        self._sync_headers()

    def set_grouping(self, mode: str) -> None:
        self.mode = mode if mode in GROUP_MODES else "none"
        self._sync_headers()
        if self.rows:  # every job's group key changed
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, len(self.columns) - 1))

    def _sync_headers(self) -> None:
        wanted: dict[str, dict[str, Any]] = {}
        if self.mode != "none":
            for job in self.rows:
                key, label = group_of(job, self.mode)
                entry = wanted.setdefault(key, {"key": key, "label": label, "count": 0})
                entry["count"] += 1
        headers = sorted(wanted.values(), key=lambda h: h["key"])
        if [h["key"] for h in headers] == [h["key"] for h in self.headers]:
            for at, (old, new) in enumerate(zip(self.headers, headers, strict=True)):
                if old != new:
                    self.headers[at] = new
                    row = len(self.rows) + at
                    self.dataChanged.emit(self.index(row, 0), self.index(row, len(self.columns) - 1))
            return
        first = len(self.rows)
        if self.headers:
            self.beginRemoveRows(QModelIndex(), first, first + len(self.headers) - 1)
            self.headers = []
            self.endRemoveRows()
        if headers:
            self.beginInsertRows(QModelIndex(), first, first + len(headers) - 1)
            self.headers = headers
            self.endInsertRows()

    def sort_parts(self, row: int, column: int) -> tuple[str, bool, Any]:
        """(group key, is a header, sort value) of a source cell: the proxy's lessThan without Qt calls."""
        if row >= len(self.rows):
            return self.headers[row - len(self.rows)]["key"], True, None
        job = self.rows[row]
        group = group_of(job, self.mode)[0] if self.mode != "none" else ""
        spec = self.columns[column]
        return group, False, spec.sort(job) if spec.sort else spec.text(job)

    def members(self, key: str) -> list[dict[str, Any]]:
        return [job for job in self.rows if group_of(job, self.mode)[0] == key]


class JobFilter(QSortFilterProxyModel):
    """State, free text and column conditions; group headers stay while a job of theirs shows. Sorts numbers
    numerically with missing values last in either direction, inside groups that keep their order."""

    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self.state = "all"
        self.conditions: list[Condition] = []
        self.mine = ""  # "Mine": only this user's jobs (the user part of a job's submitter); "" = everyone's
        self.setSortRole(SORT_ROLE)

    def set_filter(
        self, text: str, state: str, conditions: Sequence[Condition] | None = None, mine: str | None = None
    ) -> None:
        staged = hasattr(self, "beginFilterChange")  # Qt 6.10+; invalidateFilter is deprecated there
        if staged:
            self.beginFilterChange()
        self.text, self.state = text.lower().strip(), state
        if conditions is not None:
            self.conditions = list(conditions)
        if mine is not None:
            self.mine = mine
        if staged:
            self.endFilterChange()
        else:
            self.invalidateFilter()

    def accepts(self, job: dict[str, Any]) -> bool:
        state = job_state(job)  # as the table shows it: PREPARING while a project's tasks prepare
        if self.state == "active" and state not in ACTIVE:
            return False
        if self.state not in ("all", "active") and state != self.state:
            return False
        if self.mine and str(job.get("submitter", "")).split("@", 1)[0] != self.mine:
            return False
        if self.conditions and not matches(job, self.conditions):
            return False
        if not self.text:
            return True
        haystack = " ".join(
            (
                job["id"],
                job["name"],
                workload(job),
                state,
                job_agents(job),
                job["dataset"],
                job_group(job),
                *job_tags(job),
            )
        )
        return self.text in haystack.lower()

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex) -> bool:
        model = self.sourceModel()
        if isinstance(model, JobsModel):
            if source_row >= len(model.rows):  # a header shows while one of its jobs does
                return any(
                    self.accepts(job) for job in model.members(model.headers[source_row - len(model.rows)]["key"])
                )
            return self.accepts(model.rows[source_row])
        job = model.index(source_row, 0, source_parent).data(ROW_ROLE)
        return job is not None and self.accepts(job)

    def lessThan(self, left: QModelIndex | QPersistentModelIndex, right: QModelIndex | QPersistentModelIndex) -> bool:
        model = self.sourceModel()
        if not isinstance(model, JobsModel):
            return super().lessThan(left, right)
        ascending = self.sortOrder() == Qt.SortOrder.AscendingOrder
        group_l, header_l, a = model.sort_parts(left.row(), left.column())
        group_r, header_r, b = model.sort_parts(right.row(), right.column())
        # Qt asks lessThan(right, left) for a descending sort; answers here are flipped to keep groups ascending,
        # each header first and missing values last whichever way the user sorts.
        if group_l != group_r:
            return (group_l < group_r) == ascending
        if header_l or header_r:
            return header_l if ascending else header_r
        if a is None or b is None:
            if a is None and b is None:
                return False
            return (b is None) == ascending
        return _order(a) < _order(b)


def _order(value: Any) -> tuple[int, Any]:
    return (0, float(value)) if is_number(value) else (1, str(value).lower())
