"""The submit dialog, generated from the workload parameter schemas the controller publishes.

Every edit re-runs the one job-spec parser (controller/jobspec.py) on what the form holds, so a bad
value is refused inline, next to its field, before anything is sent; the controller re-validates.
Two tabs: "Workload" (a built-in or a one-file script) and "Project" (a folder and its command, project_tab.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.validation import MAX_TRIALS_PER_TASK
from tensorfleet_agent.workloads.datasets import IMAGES
from tensorfleet_desktop.controller.jobspec import KEEP_MODELS, parse_job_spec
from tensorfleet_desktop.controller.sweep import SEARCHES
from tensorfleet_desktop.ui import theme as themes
from tensorfleet_desktop.ui.formatting import human_bytes
from tensorfleet_desktop.ui.project_tab import ProjectTab, RunBlocking
from tensorfleet_desktop.ui.settings_view import app_settings
from tensorfleet_desktop.ui.widgets import guard_wheel

CATEGORY_ORDER = {"sklearn": 0, "torch": 1, "script": 2, "diagnostic": 3}
DIAGNOSTIC = "diagnostic"  # noop, sleep, emit, fail…: platform checks, listed only on request
SHOW_DIAGNOSTIC = "show_diagnostic_workloads"  # the QSettings key of that request
INVALID_STYLE = "border: 1px solid #d1242f; background: rgba(209, 36, 47, 0.08);"
UPLOADED = "uploaded:"  # a table's item: uploaded:NAME:VERSION (a --target workload trains on it)
NO_FOLDER = "(none: the data_dir parameter names a folder on the agents)"
PROJECT = "project"  # the project workload: submitted from its own tab, not from the schema form


class FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ParamInput:
    """One schema parameter as a widget; `value()` is what the form holds, None for the default."""

    def __init__(self, spec: dict[str, Any], on_change: Callable[[], object]) -> None:
        self.spec = spec
        default = spec["default"]
        if spec["type"] == "bool":
            box = QCheckBox()
            box.setChecked(bool(default))
            box.toggled.connect(on_change)
            self.widget: QWidget = box
        elif spec["choices"]:
            combo = QComboBox()
            for choice in spec["choices"]:
                combo.addItem("none" if choice is None else str(choice), choice)
            if default in spec["choices"]:
                combo.setCurrentIndex(spec["choices"].index(default))
            combo.currentIndexChanged.connect(on_change)
            self.widget = combo
        else:
            edit = QLineEdit()
            edit.setPlaceholderText(
                "none" if default is None else json.dumps(default) if spec["type"] == "list" else str(default)
            )
            edit.textChanged.connect(on_change)
            self.widget = edit
        self.widget.setObjectName(f"param_{spec['name']}")
        self.widget.setToolTip(spec["help"])

    def value(self) -> Any:
        spec, widget = self.spec, self.widget
        if isinstance(widget, QCheckBox):
            return widget.isChecked() if widget.isChecked() != bool(spec["default"]) else None
        if isinstance(widget, QComboBox):
            choice = widget.currentData()
            return None if choice == spec["default"] else choice
        assert isinstance(widget, QLineEdit)
        text = widget.text().strip()
        if not text:
            return None
        where = f"hyperparameters.{spec['name']}"
        if text.lower() in ("none", "null") and spec["nullable"]:
            return "__null__"
        try:
            if spec["type"] == "int":
                return int(text)
            if spec["type"] == "float":
                return float(text)
            if spec["type"] == "list":
                return yaml.safe_load(text)
        except (ValueError, yaml.YAMLError):
            kind = {"int": "an integer", "float": "a number"}.get(spec["type"], "a list")
            raise FieldError(where, f"must be {kind}, got {text!r}") from None
        return text


class SubmitDialog(QDialog):
    """Emits `submitted(job)` once the controller accepted the job; `submit_requested(spec)` asks for a submit of
    the Workload tab, `project_submit_requested(request)` for `submit_project(**request)` of the Project tab."""

    submitted = Signal(dict)
    submit_requested = Signal(dict)
    project_submit_requested = Signal(dict)

    def __init__(
        self,
        workloads: list[dict[str, Any]],
        datasets: list[dict[str, Any]],
        agents: list[str],
        parent: QWidget | None = None,
        *,
        run_blocking: RunBlocking,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Submit a job")
        self.resize(620, 760)
        self.project_known = any(w["name"] == PROJECT for w in workloads)
        self.all_workloads = sorted(
            (w for w in workloads if w["name"] != PROJECT),
            key=lambda w: (CATEGORY_ORDER.get(w["category"], 9), w["name"]),
        )
        self.workloads: list[dict[str, Any]] = []  # those the Workload list shows
        stored = [d for d in datasets if not d.get("builtin")]  # ListDatasets lists the built-ins too
        self.uploaded = {d["name"]: d for d in stored if d.get("format")}  # tables: their latest version
        self.folders = [d for d in stored if not d.get("format")]  # trees and references: every version
        self.agents = agents
        self.params: dict[str, ParamInput] = {}
        self.errors: dict[str, str] = {}
        self.script_source = ""
        self.script_name = ""

        self.workload = QComboBox()
        self.workload.setObjectName("workload")
        self.show_diagnostic = QCheckBox("show diagnostic workloads")
        self.show_diagnostic.setObjectName("show_diagnostic")
        self.show_diagnostic.setToolTip("noop, sleep, emit, fail…: checks of the cluster itself, not training")
        self.show_diagnostic.setChecked(bool(app_settings().value(SHOW_DIAGNOSTIC, False, type=bool)))
        self._fill_workloads()
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.name = QLineEdit()
        self.name.setObjectName("name")
        self.name.setPlaceholderText("ALGORITHM-DATASET")
        self.dataset = QComboBox()
        self.dataset.setObjectName("dataset")
        self.target = QComboBox()
        self.target.setObjectName("target")
        self.model_name = QLineEdit()
        self.model_name.setObjectName("model_name")
        self.model_name.setPlaceholderText("ALGORITHM-DATASET")

        top = QFormLayout()
        workload_row = QHBoxLayout()
        workload_row.addWidget(self.workload, 1)
        workload_row.addWidget(self.show_diagnostic)
        top.addRow("Workload", workload_row)
        top.addRow("", self.summary)
        top.addRow("Name", self.name)
        top.addRow("Dataset", self.dataset)
        top.addRow("Target column", self.target)
        top.addRow("Register model as", self.model_name)

        self.param_box = QGroupBox("Parameters")
        self.param_form = QFormLayout(self.param_box)

        self.script_box = QGroupBox("Script")
        script_form = QFormLayout(self.script_box)
        self.script_label = QLabel("no file chosen")
        pick = QPushButton("Choose .py file…")
        pick.clicked.connect(self.choose_script)
        row = QHBoxLayout()
        row.addWidget(self.script_label, 1)
        row.addWidget(pick)
        script_form.addRow("File", row)
        self.script_args = QLineEdit()
        self.script_args.setObjectName("script_args")
        self.script_args.setPlaceholderText("--lr 0.01 --epochs 5")
        script_form.addRow("Arguments", self.script_args)

        self.sweep_box = QGroupBox("Hyperparameter sweep")
        self.sweep_box.setCheckable(True)
        self.sweep_box.setChecked(False)
        sweep_form = QFormLayout(self.sweep_box)
        self.sweep_space = QPlainTextEdit()
        self.sweep_space.setObjectName("sweep_space")
        self.sweep_space.setPlaceholderText(
            "one PARAM=SPEC per line:\nC=float:0.01:100:log\nkernel=rbf,linear\nmax_depth=int:2:12"
        )
        self.sweep_space.setFixedHeight(80)
        self.sweep_search = QComboBox()
        self.sweep_search.addItems(list(SEARCHES))
        self.sweep_search.setCurrentText("tpe")
        self.sweep_trials = QSpinBox()
        self.sweep_trials.setRange(1, 10_000)
        self.sweep_trials.setValue(10)
        self.sweep_metric = QComboBox()
        self.sweep_metric.addItems(["(default)", "test_accuracy", "f1_macro", "train_accuracy", "r2", "rmse", "mae"])
        self.sweep_prune = QCheckBox("stop unpromising trials early (iterative algorithms)")
        self.sweep_keep = QComboBox()
        self.sweep_keep.setObjectName("sweep_keep")
        self.sweep_keep.addItems(list(KEEP_MODELS))  # best first: the parser's default
        self.sweep_keep.setToolTip("which trials' models are copied to the controller and registered")
        self.sweep_per_task = QSpinBox()
        self.sweep_per_task.setObjectName("sweep_per_task")
        self.sweep_per_task.setRange(0, MAX_TRIALS_PER_TASK)
        self.sweep_per_task.setSpecialValueText("auto")  # 0: the controller shares the budget out (trial bundles)
        self.sweep_per_task.setToolTip("trials one agent task runs one after another (auto: chosen from the budget)")
        sweep_form.addRow("Search space", self.sweep_space)
        sweep_form.addRow("Search", self.sweep_search)
        sweep_form.addRow("Trials", self.sweep_trials)
        sweep_form.addRow("Metric", self.sweep_metric)
        sweep_form.addRow("Keep models", self.sweep_keep)
        sweep_form.addRow("Trials per task", self.sweep_per_task)
        sweep_form.addRow(self.sweep_prune)

        resources = QGroupBox("Resources and scheduling")
        res_form = QFormLayout(resources)
        self.workers = QSpinBox()
        self.workers.setObjectName("num_workers")
        self.workers.setRange(1, 256)
        self.gpus = QSpinBox()
        self.gpus.setObjectName("gpus")
        self.gpus.setRange(0, 64)
        self.gpu_memory = QLineEdit()
        self.gpu_memory.setObjectName("gpu_memory")
        self.gpu_memory.setPlaceholderText("whole GPUs; or share one: 6GiB, 512MiB")
        self.gpu_memory.setToolTip(
            "each worker shares one GPU with other tasks, using at most this much of its memory (torch is capped)"
        )
        self.priority = QSpinBox()
        self.priority.setObjectName("priority")
        self.priority.setRange(-1000, 1000)
        self.preemptible = QCheckBox("preemptible: a more important job may stop its tasks (they resume later)")
        self.preemptible.setObjectName("preemptible")
        self.preemptible.setToolTip("by default below priority 0; stopped tasks save a checkpoint and are queued again")
        self.allow_restart = QCheckBox("also before its first checkpoint (the task starts over)")
        self.allow_restart.setObjectName("allow_restart")
        self.allow_restart.setEnabled(False)
        self._preemptible_chosen = False  # the user ticked or cleared it: it no longer follows the priority
        self.retries = QSpinBox()
        self.retries.setRange(0, 100)
        self.retries.setValue(2)
        self.timeout = QLineEdit()
        self.timeout.setObjectName("timeout")
        self.timeout.setPlaceholderText("no limit (seconds)")
        self.run_on = QLineEdit()
        self.run_on.setObjectName("constraints_on")
        self.run_on.setPlaceholderText("any agent; or names/ids, comma separated: " + ", ".join(agents[:3]))
        self.not_on = QLineEdit()
        self.not_on.setPlaceholderText("agents to avoid")
        res_form.addRow("Workers (tasks / ranks)", self.workers)
        res_form.addRow("GPUs per worker", self.gpus)
        res_form.addRow("GPU memory per worker", self.gpu_memory)
        res_form.addRow("Priority", self.priority)
        res_form.addRow("", self.preemptible)
        res_form.addRow("", self.allow_restart)
        res_form.addRow("Retries", self.retries)
        res_form.addRow("Timeout", self.timeout)
        res_form.addRow("Run on", self.run_on)
        res_form.addRow("Not on", self.not_on)

        body = QWidget()
        body_layout = QVBoxLayout(body)
        body_layout.addLayout(top)
        body_layout.addWidget(self.param_box)
        body_layout.addWidget(self.script_box)
        body_layout.addWidget(self.sweep_box)
        body_layout.addWidget(resources)
        body_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)

        self.project = ProjectTab(run_blocking)
        self.tabs = QTabWidget()
        self.tabs.setObjectName("submit_tabs")
        self.tabs.addTab(scroll, "Workload")
        self.tabs.addTab(self.project, "Project")
        if not self.project_known:
            self.tabs.setTabEnabled(1, False)
            self.tabs.setTabToolTip(1, "this controller runs no project jobs (it predates them)")
        self.tabs.currentChanged.connect(lambda _index: self.validate())
        self.project.changed.connect(self.validate)

        self.error_label = QLabel()
        self.error_label.setObjectName("error")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(f"color: {themes.error_color()};")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Submit")
        self.buttons.accepted.connect(self.submit)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)

        for signal in (
            self.name.textChanged,
            self.model_name.textChanged,
            self.script_args.textChanged,
            self.sweep_space.textChanged,
            self.timeout.textChanged,
            self.gpu_memory.textChanged,
            self.run_on.textChanged,
            self.not_on.textChanged,
        ):
            signal.connect(self.validate)
        for spin in (self.workers, self.gpus, self.priority, self.retries, self.sweep_trials, self.sweep_per_task):
            spin.valueChanged.connect(self.validate)
        for combo in (self.dataset, self.target, self.sweep_search, self.sweep_metric, self.sweep_keep):
            combo.currentIndexChanged.connect(self.validate)
        self.dataset.currentIndexChanged.connect(self._fill_targets)
        self.sweep_box.toggled.connect(self.validate)
        self.sweep_prune.toggled.connect(self.validate)
        self.priority.valueChanged.connect(self._follow_priority)
        self.preemptible.clicked.connect(self._preemptible_clicked)
        self.preemptible.toggled.connect(self.allow_restart.setEnabled)
        self.preemptible.toggled.connect(lambda _on: self.validate())
        self.allow_restart.toggled.connect(lambda _on: self.validate())
        self.workload.currentIndexChanged.connect(self._workload_changed)
        self.show_diagnostic.toggled.connect(lambda _on: self._fill_workloads())
        self.show_diagnostic.clicked.connect(  # the user's choice (not select_workload's): saved
            lambda on: app_settings().setValue(SHOW_DIAGNOSTIC, bool(on))
        )
        self._workload_changed()

    # ---- form generation

    def current_workload(self) -> dict[str, Any]:
        return self.workloads[max(0, self.workload.currentIndex())]

    def _fill_workloads(self) -> None:
        """The Workload list: diagnostic ones only while the box is ticked (or when nothing else exists)."""
        show = self.show_diagnostic.isChecked() or all(w["category"] == DIAGNOSTIC for w in self.all_workloads)
        visible = [w for w in self.all_workloads if show or w["category"] != DIAGNOSTIC]
        if visible == self.workloads:
            return
        chosen = self.workload.currentData()
        self.workloads = visible
        self.workload.blockSignals(True)
        self.workload.clear()
        for w in visible:
            self.workload.addItem(f"{w['name']}  ({w['category']})", w["name"])
            self.workload.setItemData(self.workload.count() - 1, w["summary"], Qt.ItemDataRole.ToolTipRole)
        self.workload.setCurrentIndex(max(0, self.workload.findData(chosen)))
        self.workload.blockSignals(False)
        if chosen is not None and self.workload.currentData() != chosen:
            self._workload_changed()

    def select_workload(self, name: str) -> None:
        """Choose `name`; a diagnostic one shows the diagnostic workloads for this dialog (not saved)."""
        if self.workload.findData(name) < 0 and any(w["name"] == name for w in self.all_workloads):
            self.show_diagnostic.setChecked(True)
        self.workload.setCurrentIndex(self.workload.findData(name))

    def select_dataset(self, name: str) -> None:
        """A built-in's name, a folder's NAME:VERSION, or a table's NAME[:VERSION] (its latest when the version is
        not offered)."""
        index = self.dataset.findData(name)
        if index < 0:
            index = self.dataset.findData(UPLOADED + name)
        if index < 0 and name.split(":", 1)[0] in self.uploaded:
            index = self.dataset.findData(UPLOADED + _table_ref(self.uploaded[name.split(":", 1)[0]]))
        self.dataset.setCurrentIndex(index)

    def workload_for(self, ref: str) -> str | None:
        """The first workload that takes this dataset: one offering the built-in, an image workload for a folder
        version, a table workload for a table."""
        name = ref.split(":", 1)[0]
        for w in self.workloads:
            if not w["tasks"]:
                continue
            images = IMAGES in w["tasks"]
            if ref in w["datasets"]:
                return str(w["name"])
            if images and any(d["name"] == name for d in self.folders):
                return str(w["name"])
            if not images and name in self.uploaded and w["category"] in ("sklearn", "torch"):
                return str(w["name"])
        return None

    def _workload_changed(self) -> None:
        w = self.current_workload()
        self.summary.setText(w["summary"])
        while self.param_form.rowCount():
            self.param_form.removeRow(0)
        self.params = {}
        for spec in w["params"]:
            field = ParamInput(spec, self.validate)
            self.params[spec["name"]] = field
            label = QLabel(spec["name"])
            label.setToolTip(spec["help"])
            self.param_form.addRow(label, field.widget)
        self.param_box.setVisible(bool(w["params"]))
        self._guard_wheels()
        self.dataset.blockSignals(True)
        self.dataset.clear()
        if IMAGES in w["tasks"]:  # a folder (class_name/*.png): each version of each tree or reference
            for entry in self.folders:
                for v in reversed(entry.get("versions") or []):
                    ref = f"{entry['name']}:{v['version']}"
                    about = f"{v['source']}, {v['files']} files, {human_bytes(v['bytes'])}"
                    self.dataset.addItem(f"{ref}  ({about})", ref)
            self.dataset.addItem(NO_FOLDER, "")
        elif w["tasks"]:
            for name in w["datasets"]:
                self.dataset.addItem(name, name)
            if w["category"] in ("sklearn", "torch"):
                for entry in self.uploaded.values():
                    ref = _table_ref(entry)
                    self.dataset.addItem(f"{ref}  (table, {entry['rows']} rows)", UPLOADED + ref)
        else:
            self.dataset.addItem("(no dataset)", "")
        self.dataset.blockSignals(False)
        self.dataset.setEnabled(bool(w["tasks"]))
        self.script_box.setVisible(w["name"] == "script")
        self.sweep_box.setVisible(w["category"] == "sklearn")
        if w["category"] != "sklearn":
            self.sweep_box.setChecked(False)
        self._fill_targets()
        self.validate()

    def _guard_wheels(self) -> None:
        """No value in the form changes under a wheel turned to scroll it (issue 22, item 9)."""
        guard_wheel(*self.findChildren(QAbstractSpinBox), *self.findChildren(QComboBox))

    def _fill_targets(self) -> None:
        data = self.dataset.currentData() or ""
        self.target.blockSignals(True)
        self.target.clear()
        if data.startswith(UPLOADED):
            columns = self.uploaded[data[len(UPLOADED) :].split(":", 1)[0]]["columns"]
            self.target.addItems(columns)
            self.target.setCurrentIndex(len(columns) - 1)
        self.target.blockSignals(False)
        self.target.setEnabled(data.startswith(UPLOADED))
        self.validate()

    def choose_script(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Training script", "", "Python (*.py)")
        if path:
            self.set_script(Path(path))

    def set_script(self, path: Path) -> None:
        try:
            self.script_source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.script_source = ""
            self.errors["script"] = f"cannot read {path}: {exc}"
        self.script_name = path.name
        self.script_label.setText(str(path))
        self.validate()

    # ---- the spec and its validation

    def spec(self) -> dict[str, Any]:
        """The job spec the form describes (raises FieldError for text that is not a value at all)."""
        w = self.current_workload()
        spec: dict[str, Any] = {"algorithm": w["name"]}
        if self.name.text().strip():
            spec["name"] = self.name.text().strip()
        data = self.dataset.currentData() or ""
        if data.startswith(UPLOADED):
            spec["dataset"] = data[len(UPLOADED) :]
            spec["target"] = self.target.currentText()
        elif data:
            spec["dataset"] = data
        hyper = {}
        for name, field in self.params.items():
            value = field.value()
            if value is not None:
                hyper[name] = None if value == "__null__" else value
        if w["name"] == "script":
            spec["script"] = {
                "name": self.script_name,
                "source": self.script_source,
                "args": self.script_args.text().split(),
            }
        elif hyper:
            spec["hyperparameters"] = hyper
        if self.model_name.text().strip():
            spec["model_name"] = self.model_name.text().strip()
        for key, spin, default in (
            ("num_workers", self.workers, 1),
            ("gpus", self.gpus, 0),
            ("priority", self.priority, 0),
            ("max_retries", self.retries, 2),
        ):
            if spin.value() != default:
                spec[key] = spin.value()
        if self.gpu_memory.text().strip():  # the controller's parser reads the size (jobspec._gpu_share)
            spec["gpu_memory"] = self.gpu_memory.text().strip()
        if self.preemptible.isChecked() != (self.priority.value() < 0):  # said only when it is not the default
            spec["preemptible"] = self.preemptible.isChecked()
        if self.preemptible.isChecked() and self.allow_restart.isChecked():
            spec["allow_restart"] = True
        if self.timeout.text().strip():
            try:
                spec["timeout"] = float(self.timeout.text())
            except ValueError:
                raise FieldError("timeout", f"must be a number of seconds, got {self.timeout.text()!r}") from None
        constraints = {}
        for key, edit in (("on", self.run_on), ("not_on", self.not_on)):
            names = [n.strip() for n in edit.text().split(",") if n.strip()]
            if names:
                constraints[key] = names
        if constraints:
            spec["constraints"] = constraints
        if self.sweep_box.isVisible() and self.sweep_box.isChecked():
            params = {}
            for n, line in enumerate(self.sweep_space.toPlainText().splitlines(), 1):
                if not line.strip():
                    continue
                key, sep, value = line.partition("=")
                if not sep or not key.strip() or not value.strip():
                    raise FieldError("sweep.params", f"line {n}: write PARAM=SPEC, got {line.strip()!r}")
                params[key.strip()] = value.strip()
            sweep: dict[str, Any] = {
                "params": params,
                "search": self.sweep_search.currentText(),
                "trials": self.sweep_trials.value(),
            }
            if self.sweep_metric.currentIndex() > 0:
                sweep["metric"] = self.sweep_metric.currentText()
            if self.sweep_prune.isChecked():
                sweep["prune"] = True
            if self.sweep_per_task.value():
                sweep["trials_per_task"] = self.sweep_per_task.value()
            spec["sweep"] = sweep
            if self.sweep_keep.currentText() != KEEP_MODELS[0]:
                spec["keep_models"] = self.sweep_keep.currentText()
        return spec

    def _local_form(self, spec: dict[str, Any]) -> dict[str, Any]:
        """What parse_job_spec can check here: an uploaded dataset is resolved by the controller."""
        if "target" not in spec:
            return spec
        entry = self.uploaded[spec["dataset"].split(":", 1)[0]]
        tasks = self.current_workload()["tasks"]
        local = {k: v for k, v in spec.items() if k != "target"}
        local["dataset"] = f"user:{entry['sha256']}"
        local["dataset_params"] = {"target": spec["target"], "file": entry["filename"], "task": tasks[0]}
        return local

    def on_project_tab(self) -> bool:
        return self.tabs.currentWidget() is self.project

    def validate(self) -> bool:
        for widget in [*self._field_widgets().values(), *self.project.field_widgets().values()]:
            widget.setStyleSheet("")
        problem: tuple[str, str] | None = None
        if self.on_project_tab():
            problem = self.project.problem()
        else:
            try:
                parse_job_spec(self._local_form(self.spec()))
            except FieldError as exc:
                problem = (exc.field, str(exc))
            except ValidationError as exc:
                problem = (exc.field, exc.message)
        if problem is None:
            self.error_label.setText("")
            self.ok_button.setEnabled(True)
            return True
        field, message = problem
        offending = self.project.widget_for(field) if self.on_project_tab() else self.widget_for(field)
        if offending is not None:
            offending.setStyleSheet(INVALID_STYLE)
        self.error_label.setText(f"{field}: {message}")
        self.ok_button.setEnabled(False)
        return False

    def _field_widgets(self) -> dict[str, QWidget]:
        widgets: dict[str, QWidget] = {
            "name": self.name,
            "dataset": self.dataset,
            "target": self.target,
            "model_name": self.model_name,
            "num_workers": self.workers,
            "gpus": self.gpus,
            "gpu_memory": self.gpu_memory,
            "priority": self.priority,
            "preemptible": self.preemptible,
            "allow_restart": self.allow_restart,
            "max_retries": self.retries,
            "timeout": self.timeout,
            "constraints": self.run_on,
            "sweep": self.sweep_space,
            "script": self.script_label,
            "cv": self.workers,
        }
        widgets.update({f"hyperparameters.{n}": p.widget for n, p in self.params.items()})
        return widgets

    def _follow_priority(self, priority: int) -> None:
        """Until the user chooses, preemptible follows the priority as the job spec's default does (below 0)."""
        if not self._preemptible_chosen:
            self.preemptible.setChecked(priority < 0)

    def _preemptible_clicked(self, _checked: bool) -> None:
        self._preemptible_chosen = True

    def widget_for(self, field: str) -> QWidget | None:
        widgets = self._field_widgets()
        parts = field.split(".")
        for end in range(len(parts), 0, -1):
            key = ".".join(parts[:end])
            if key in widgets:
                return widgets[key]
        return None

    def submit(self) -> None:
        if not self.validate():
            return
        self.ok_button.setEnabled(False)
        if self.on_project_tab():
            self.error_label.setText("snapshotting the folder and uploading what the controller lacks…")
            self.project.setEnabled(False)
            self.project_submit_requested.emit(self.project.request())
            return
        self.error_label.setText("submitting…")
        self.submit_requested.emit(self.spec())

    def submit_failed(self, message: str) -> None:
        self.project.setEnabled(True)
        self.error_label.setText(message)
        self.ok_button.setEnabled(True)

    def submit_succeeded(self, job: dict[str, Any]) -> None:
        self.submitted.emit(job)
        self.accept()


def _table_ref(entry: dict[str, Any]) -> str:
    """NAME:VERSION of a table's latest version (NAME alone from a controller without versions)."""
    return f"{entry['name']}:{entry['latest_version']}" if entry.get("latest_version") else str(entry["name"])


def upload_text(upload: dict[str, int]) -> str:
    """What a project submit sent: "uploaded 1 of 12 files (2.0 KiB of 1.3 MiB)"."""
    return (
        f"uploaded {upload['uploaded_files']} of {upload['files']} files "
        f"({human_bytes(upload['uploaded_bytes'])} of {human_bytes(upload['bytes'])})"
    )
