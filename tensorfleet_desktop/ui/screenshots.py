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


def submit_jobs(address: str, root: Path) -> list[str]:
    csv_path = root / "wine.csv"
    _write_csv(csv_path)
    with Client(address) as client:
        _wait("2 agents", lambda: sum(a["state"] == "ONLINE" and a["paired"] for a in client.agents()) == 2, 90)
        client.upload_dataset(csv_path, "wine-csv")
        specs = list(DEMO_JOBS) + EXTRA_JOBS
        specs.append(
            {"name": "wine-csv-forest", "algorithm": "random_forest", "dataset": "wine-csv", "target": "cultivar"}
        )
        if importlib.util.find_spec("torch"):
            specs.append(TORCH_CURVES)
        ids = [client.submit(spec)["id"] for spec in specs]
        _wait("the jobs", lambda: all(client.job(i)["state"] in TERMINAL for i in ids), 600)
        return ids


def photograph(address: str, out: Path, data_dir: Path) -> list[Path]:
    from PySide6.QtWidgets import QApplication

    from tensorfleet_desktop.ui.app import build_window, create_application

    app = create_application()
    window = build_window(address, data_dir=data_dir, autostart=False)
    window.resize(1400, 860)
    window.show()
    window.bridge.start()
    saved: list[Path] = []

    def pump(seconds: float, until: Callable[[], bool] | None = None) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until()):
            app.processEvents()
            time.sleep(0.02)

    def shot(name: str) -> None:
        pump(1.0)
        path = out / f"{name}.png"
        window.grab().save(str(path))
        saved.append(path)

    pump(20, lambda: bool(window.jobs.model.rows) and len(window.fleet.model.rows) == 2)
    window.show_view(window.fleet)
    window.fleet.table.selectRow(0)
    pump(6)  # a few telemetry samples for the sparklines
    window.fleet._show_detail()
    shot("fleet")
    window.show_view(window.jobs)
    shot("jobs")
    jobs = {j["name"]: j for j in window.jobs.model.rows}
    curves = jobs.get(TORCH_CURVES["name"]) or jobs["digits-gradient-boosting"]
    window.show_job(curves["id"])
    pump(10, lambda: window.detail.metric_points > 0 and window.detail.job is not None)
    shot("job-detail-curves")
    detail = window.detail

    def tab(title: str) -> int:
        return next(i for i in range(detail.tabs.count()) if detail.tabs.tabText(i) == title)

    detail.tabs.setCurrentIndex(tab("Tasks"))
    shot("job-detail-tasks")
    detail.tabs.setCurrentIndex(tab("Logs"))
    shot("job-detail-logs")
    window.show_job(jobs["wine-svm-sweep"]["id"])
    pump(10, lambda: bool(window.detail.sweep.trials_model.rows))
    detail.tabs.setCurrentIndex(tab("Sweep"))
    shot("job-detail-sweep")
    detail.tabs.setCurrentIndex(tab("Compare"))
    compare = sorted({jobs["digits-gradient-boosting"]["id"], curves["id"]})
    window.detail.compare_panel.metric_box.setCurrentText("test_accuracy")
    window.detail.compare_panel.compare(compare)
    pump(5, lambda: bool(window.detail.compare_panel.plot.series))
    shot("job-detail-compare")
    submit_project_dialog(window, pump, out, saved)
    window.show_view(window.models)
    pump(10, lambda: bool(window.models.model.rows))
    window.models.table.selectRow(0)
    shot("models")
    window.models.tabs.setCurrentIndex(1)
    pump(5, lambda: window.models.count_chart.bars is not None)
    shot("models-statistics")
    window.models.tabs.setCurrentIndex(0)
    window.show_view(window.datasets)
    pump(10, lambda: bool(window.datasets.model.rows))
    window.datasets.select("wine-csv")
    pump(5, lambda: window.datasets.preview.rowCount() > 0)
    shot("datasets")
    window.show_view(window.settings)
    shot("settings")
    window.close()
    QApplication.processEvents()
    return saved


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
            saved = photograph(address, args.out, root / "gui")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
