"""`python -m tensorfleet_desktop.ui.screenshots DIR`: run a demo cluster and save a PNG of every main view.

A controller (with its local agent) and a second agent start on loopback (mDNS on 127.0.0.1 only),
pair through a fresh cluster token, train the demo jobs plus a job on an uploaded CSV, and the window
is photographed once they are done. Works offscreen (no display needed).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tensorfleet_desktop.client import TERMINAL, Client
from tensorfleet_desktop.demo import DEMO_JOBS

LOOPBACK = "127.0.0.1"
EXTRA_JOBS: list[dict[str, Any]] = [
    {"name": "digits-gradient-boosting", "algorithm": "gradient_boosting", "dataset": "digits"},
]
TORCH_CURVES: dict[str, Any] = {
    "name": "digits-mlp",
    "algorithm": "torch_mlp",
    "dataset": "digits",
    "hyperparameters": {"epochs": 6},
}
#: A sweep whose trials report curves (gradient boosting reports its test metrics in rounds: the Curves tab's top-k
#: overlay) over three parameters (parallel coordinates).
CURVES_SWEEP: dict[str, Any] = {
    "name": "digits-boosting-sweep",
    "algorithm": "gradient_boosting",
    "dataset": "digits",
    "hyperparameters": {"max_iter": 40},
    "sweep": {
        "params": {
            "learning_rate": "float:0.005:0.5:log",
            "max_leaf_nodes": "int:4:48",
            "max_depth": "int:2:8",
        },
        "search": "random",
        "trials": 14,
    },
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise TimeoutError(f"timed out waiting for {what}")


def _write_csv(path: Path) -> None:
    from sklearn.datasets import load_wine

    wine = load_wine()
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([c.replace("/", "_") for c in wine.feature_names] + ["cultivar"])
        for features, label in zip(wine.data, wine.target, strict=True):
            out.writerow([*(repr(float(x)) for x in features), f"class_{label}"])


def start_cluster(root: Path) -> tuple[str, list[subprocess.Popen[bytes]]]:
    env = {
        **os.environ,
        "TENSORFLEET_CLUSTER_TOKEN": f"tfshots-{secrets.token_urlsafe(12)}",
        "TENSORFLEET_MDNS_INTERFACES": LOOPBACK,
    }
    port = _free_port()
    ready = root / "controller.ready"
    serve = [sys.executable, "-m", "tensorfleet_desktop", "serve", "--host", LOOPBACK, "--port", str(port)]
    serve += ["--data-dir", str(root / "controller"), "--interfaces", LOOPBACK, "--ready-file", str(ready)]
    serve += ["--local-agent-slots", "1"]
    agent = [sys.executable, "-m", "tensorfleet_agent", "--host", LOOPBACK, "--port", "0", "--name", "lab-box-2"]
    agent += ["--data-dir", str(root / "agent2"), "--interfaces", LOOPBACK, "--cpu-slots", "1"]
    agent += ["--exit-with-pid", str(os.getpid())]
    procs = []
    for cmd, log in ((serve, "controller.log"), (agent, "agent2.log")):
        with (root / log).open("ab") as fh:
            procs.append(subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT))
    _wait("the controller", ready.exists, 90)
    return f"{LOOPBACK}:{port}", procs


def _group(spec: dict[str, Any]) -> str:
    """The label the experiments table groups the jobs by."""
    if "sweep" in spec:
        return "tuning"
    return "deep-learning" if spec["algorithm"].startswith("torch") else "baselines"


def submit_jobs(address: str, root: Path) -> list[str]:
    csv_path = root / "wine.csv"
    _write_csv(csv_path)
    with Client(address) as client:
        _wait("2 agents", lambda: sum(a["state"] == "ONLINE" and a["paired"] for a in client.agents()) == 2, 90)
        client.upload_dataset(csv_path, "wine-csv")
        if importlib.util.find_spec("PIL"):  # an image folder, as two versions (the Datasets view's tree and preview)
            from tensorfleet_agent.workloads.shapes import generate

            generate(root / "shapes", per_class=12, size=96, classes=3)
            client.upload_dataset_version(root / "shapes", "shapes")
            generate(root / "shapes", per_class=16, size=96, classes=3)
            client.upload_dataset_version(root / "shapes", "shapes")
        specs = [*DEMO_JOBS, *EXTRA_JOBS, CURVES_SWEEP]
        specs.append(
            {"name": "wine-csv-forest", "algorithm": "random_forest", "dataset": "wine-csv", "target": "cultivar"}
        )
        if importlib.util.find_spec("torch"):
            specs.append(TORCH_CURVES)
        ids = [client.submit({**spec, "group": _group(spec)})["id"] for spec in specs]
        _wait("the jobs", lambda: all(client.job(i)["state"] in TERMINAL for i in ids), 600)
        return ids


class Camera:
    """Saves PNGs of the window; a view that cannot be set up is reported and skipped, not the whole run lost."""

    def __init__(self, app: Any, window: Any, out: Path) -> None:
        self.app, self.window, self.out = app, window, out
        self.saved: list[Path] = []
        self.failed: list[str] = []

    def pump(self, seconds: float, until: Callable[[], bool] | None = None) -> None:
        from PySide6.QtCore import QEvent

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until()):
            self.app.processEvents()
            # processEvents leaves deleteLater()'d widgets alive (the event loop deletes them): a view rebuilt
            # for another job would otherwise show its old panes in the picture
            self.app.sendPostedEvents(None, QEvent.Type.DeferredDelete)
            time.sleep(0.02)

    def shot(self, name: str, widget: Any = None) -> None:
        self.pump(1.0)
        path = self.out / f"{name}.png"
        (widget or self.window).grab().save(str(path))
        self.saved.append(path)

    def scene(self, name: str, setup: Callable[[], None]) -> None:
        """`setup` brings the window to what `name` shows (it may take its own shots)."""
        try:
            setup()
        except Exception as exc:  # one view's failure must not cost the other screenshots
            self.failed.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"screenshots: {name} not taken: {type(exc).__name__}: {exc}", file=sys.stderr)


def set_theme(window: Any, name: str) -> None:
    """The app's theme, as Settings would set it (ui.theme where it exists)."""
    try:
        from tensorfleet_desktop.ui import theme
    except ImportError:
        window.apply_theme(name)
    else:
        theme.apply(name)


def photograph(address: str, out: Path, data_dir: Path) -> tuple[list[Path], list[str]]:
    """(the PNGs saved, the views that could not be photographed and why)."""
    from PySide6.QtWidgets import QApplication

    from tensorfleet_desktop.ui.app import build_window, create_application

    app = create_application()
    window = build_window(address, data_dir=data_dir, autostart=False)
    window.resize(1400, 860)
    set_theme(window, "light")
    window.show()
    window.bridge.start()
    cam = Camera(app, window, out)
    pump, shot = cam.pump, cam.shot

    pump(20, lambda: bool(window.jobs.model.rows) and len(window.fleet.model.rows) == 2)
    jobs = {j["name"]: j for j in window.jobs.model.rows}
    detail = window.detail

    def tab(title: str) -> int:
        return next(i for i in range(detail.tabs.count()) if detail.tabs.tabText(i) == title)

    def welcome() -> None:
        window.show_view(window.welcome)
        pump(5, lambda: window.welcome.isVisible())
        shot("welcome")

    def fleet() -> None:
        window.show_view(window.fleet)
        window.fleet.table.selectRow(0)
        pump(6)  # a few telemetry samples for the sparklines
        window.fleet._show_detail()
        shot("fleet")

    def jobs_table() -> None:
        window.show_view(window.jobs)
        shot("jobs")

    def experiments() -> None:
        """The Jobs view as an experiments table: results and hyperparameters as columns, grouped by the jobs'
        group label, sorted on test accuracy, two runs selected to compare."""
        from PySide6.QtCore import Qt

        view = window.jobs
        window.show_view(view)
        for key in ("progress", "submitted", "best"):
            view.set_column_visible(key, False)
        view.group_by.setCurrentIndex(view.group_by.findData("group"))
        column = next(i for i, c in enumerate(view.model.columns) if c.id == "metric:test_accuracy")
        view.table.sortByColumn(column, Qt.SortOrder.DescendingOrder)
        view.select(jobs["iris-svm"]["id"])
        view.select(jobs["iris-random-forest"]["id"], add=True)
        shot("experiments-table")
        view.group_by.setCurrentIndex(view.group_by.findData("none"))
        view.reset_columns()
        view.table.clearSelection()

    curves = jobs.get(TORCH_CURVES["name"]) or jobs["digits-gradient-boosting"]

    def job_detail() -> None:
        window.show_job(curves["id"])
        pump(10, lambda: detail.metric_points > 0 and detail.job is not None)
        detail.tabs.setCurrentIndex(tab("Curves"))
        shot("job-detail-curves")
        detail.tabs.setCurrentIndex(tab("Tasks"))
        shot("job-detail-tasks")
        detail.tabs.setCurrentIndex(tab("Logs"))
        shot("job-detail-logs")

    def plot_toolbar() -> None:
        """The loss plot alone, smoothed (raw curve faint behind), log y, the hover read-out at mid-run."""
        window.show_job(curves["id"])
        pump(10, lambda: detail.metric_points > 0 and detail.job is not None)
        detail.tabs.setCurrentIndex(tab("Curves"))
        panel = detail.curves
        metric = "loss" if "loss" in panel.plot.plots else next(iter(panel.plot.plots))
        panel.metric_filter.setCurrentText(metric)
        toolbar, plot = panel.plot.toolbars[metric], panel.plot.plots[metric]
        toolbar.smoothing.setValue(80)
        toolbar.log_y.setChecked(True)
        pump(1.0)
        (x0, x1), _ = plot.plotItem.vb.viewRange()
        if not plot.hover_at(x0 + (x1 - x0) * 0.45):
            raise RuntimeError(f"no read-out on the {metric} plot")
        shot("plot-toolbar")
        toolbar.smoothing.setValue(0)
        toolbar.log_y.setChecked(False)
        plot.hide_hover()
        panel.metric_filter.setCurrentIndex(0)

    sweep = jobs[CURVES_SWEEP["name"]]

    def sweep_view() -> None:
        window.show_job(sweep["id"])
        pump(10, lambda: bool(detail.sweep.trials_model.rows))
        detail.tabs.setCurrentIndex(tab("Sweep"))
        shot("job-detail-sweep")
        detail.tabs.setCurrentIndex(tab("Curves"))
        pump(10, lambda: detail.metric_points > 0)
        shot("sweep-curves-top-k")

    def compare() -> None:
        window.show_job(curves["id"])
        detail.tabs.setCurrentIndex(tab("Compare"))
        ids = sorted({jobs["digits-gradient-boosting"]["id"], curves["id"]})
        detail.compare_panel.metric_box.setCurrentText("test_accuracy")
        detail.compare_panel.compare(ids)
        pump(5, lambda: bool(detail.compare_panel.plot.series))
        shot("job-detail-compare")

    def themes() -> None:
        """The same views in both themes: a plot-heavy one and a table; in dark also the sweep's plots and the
        fleet's gauges (their light versions are the shots above)."""
        window.show_job(curves["id"])
        pump(10, lambda: detail.metric_points > 0)
        detail.tabs.setCurrentIndex(tab("Curves"))
        for name in ("light", "dark"):
            set_theme(window, name)
            window.show_view(window.detail)
            shot(f"theme-{name}-curves")
            window.show_view(window.jobs)
            shot(f"theme-{name}-jobs")
        window.show_job(sweep["id"])
        pump(10, lambda: bool(detail.sweep.trials_model.rows))
        detail.tabs.setCurrentIndex(tab("Sweep"))
        shot("theme-dark-sweep")
        window.show_view(window.fleet)
        shot("theme-dark-fleet")
        set_theme(window, "light")

    def models() -> None:
        window.show_view(window.models)
        pump(10, lambda: bool(window.models.model.rows))
        window.models.table.selectRow(0)
        shot("models")
        window.models.tabs.setCurrentIndex(1)
        pump(5, lambda: window.models.count_chart.bars is not None)
        shot("models-statistics")
        window.models.tabs.setCurrentIndex(0)

    def datasets() -> None:
        window.show_view(window.datasets)
        pump(10, lambda: bool(window.datasets.model.rows))
        window.datasets.select("wine-csv")
        pump(5, lambda: window.datasets.preview.rowCount() > 0)
        shot("datasets")
        view = window.datasets
        if view.model.find("shapes") >= 0:
            view.select("shapes")
            pump(10, lambda: view.shown_ref.startswith("shapes:") and bool(view.tree.files))
            view.tree.select_path(sorted(p for p in view.tree.files if p.endswith(".png"))[0])
            pump(10, lambda: view.pane.shown is not None and view.pane.shown.kind == "image")
            shot("datasets-images")

    def settings() -> None:
        window.show_view(window.settings)
        shot("settings")

    for name, setup in (
        ("welcome", welcome),
        ("fleet", fleet),
        ("jobs", jobs_table),
        ("experiments-table", experiments),
        ("job-detail", job_detail),
        ("plot-toolbar", plot_toolbar),
        ("sweep", sweep_view),
        ("compare", compare),
        ("submit-project", lambda: submit_project_dialog(window, pump, out, cam.saved)),
        ("themes", themes),
        ("models", models),
        ("datasets", datasets),
        ("settings", settings),
    ):
        cam.scene(name, setup)
    window.close()
    QApplication.processEvents()
    return cam.saved, cam.failed


def submit_project_dialog(window: Any, pump: Callable[..., None], out: Path, saved: list[Path]) -> None:
    """The submit dialog's Project tab with the example project scanned (the dialog is its own window)."""
    example = Path(__file__).resolve().parents[2] / "examples" / "project"
    if not example.is_dir():  # an installed package has no examples/
        return
    window.show_view(window.jobs)
    window.jobs.dialog = None
    window.jobs.open_submit_dialog()
    pump(10, lambda: window.jobs.dialog is not None and window.jobs.dialog.isVisible())
    dialog = window.jobs.dialog
    if dialog is None:
        return
    dialog.resize(760, 860)
    dialog.tabs.setCurrentWidget(dialog.project)
    dialog.project.set_folder(example)
    pump(20, lambda: not dialog.project.scanning)
    dialog.project.command.setText("python -m spirals.train --epochs 20")
    pump(1.0)
    path = out / "submit-project.png"
    dialog.grab().save(str(path))
    saved.append(path)
    dialog.reject()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("out", type=Path, help="folder for the PNG files")
    args = parser.parse_args(argv)
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tensorfleet-shots-") as tmp:
        root = Path(tmp)
        os.environ["XDG_CONFIG_HOME"] = str(root / "xdg")  # leave the user's own app settings alone
        address, procs = start_cluster(root)
        try:
            submit_jobs(address, root)
            saved, failed = photograph(address, args.out, root / "gui")
        finally:
            with contextlib.suppress(Exception), Client(address, timeout=10) as client:
                client.shutdown()
            for proc in procs:
                proc.terminate()
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)
    for path in saved:
        print(path)
    print(f"{len(saved)} screenshots in {time.monotonic() - started:.0f} s", file=sys.stderr)
    for failure in failed:
        print(f"not taken: {failure}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
