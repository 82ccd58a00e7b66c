"""Welcome: what the app found (controller, agents, built-in datasets), live, and the demo jobs one click away.

Shown first the very first time the app opens (a QSettings flag); later from the nav list or Help → Welcome.
"""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget

from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.datasets_view import builtin_datasets, shape_text
from tensorfleet_desktop.ui.settings_view import app_settings
from tensorfleet_desktop.ui.view import Notify, View
from tensorfleet_desktop.ui.widgets import action_button

SEEN_KEY = "welcome/seen"  # QSettings: the welcome pane was shown first once; later starts open on Jobs

AGENT_HELP = (
    "No agents yet. On each machine that should train, install TensorFleet and run <code>tensorfleet-agent</code>: "
    "the controller finds agents on this LAN over mDNS and they appear here and in Fleet. Pair one with the join "
    "token it prints (<code>tensorfleet-agent token</code>, then Fleet → Pair…), or start agents and controller "
    "with the same <code>TENSORFLEET_CLUSTER_TOKEN</code> so they pair by themselves. An agent mDNS cannot see "
    "(another subnet, a VPN): Fleet → Add… with its HOST:PORT."
)
DEMO_TEXT = (
    "Five scikit-learn jobs on the built-in datasets (iris, wine, breast_cancer), one of them a 6-trial sweep, "
    "plus a 2-rank PyTorch job when PyTorch is installed here: the same jobs as <code>tensorfleet demo</code>. "
    "Each one that succeeds registers a model."
)
SHORTCUTS = (
    "Keyboard: Ctrl+N submit a job · Ctrl+F filter · Del cancel the selected jobs (asks first) · F5 refresh · "
    "Ctrl+1… switch views · F1 this page. Right-click a row for its actions."
)


def first_run() -> bool:
    """Whether the app has never shown its welcome pane (this user, this machine)."""
    return not bool(app_settings().value(SEEN_KEY, False, type=bool))


def mark_seen() -> None:
    app_settings().setValue(SEEN_KEY, True)


def _section(title: str) -> tuple[QFrame, QVBoxLayout]:
    box = QFrame()
    box.setFrameShape(QFrame.Shape.StyledPanel)
    column = QVBoxLayout(box)
    heading = QLabel(f"<b>{html.escape(title)}</b>")
    column.addWidget(heading)
    return box, column


def _text() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class WelcomeView(View):
    title = "Welcome"
    icon = "tensorfleet"
    demo_submitted = Signal(list)  # the demo jobs the controller accepted: the window shows Jobs
    open_fleet = Signal()
    add_agent = Signal()
    open_settings = Signal()

    def __init__(self, bridge: Bridge, notify: Notify) -> None:
        super().__init__(bridge, notify)
        self.connection: dict[str, Any] | None = None
        self.agents: list[dict[str, Any]] = []
        self.datasets = builtin_datasets()

        heading = QLabel("<h2>Welcome to TensorFleet</h2>")
        intro = _text()
        intro.setText(
            "Train machine-learning models on the machines you already have: a controller schedules jobs onto "
            "agents on your LAN. This is what the app found (it updates live)."
        )

        controller_box, controller_column = _section("Controller")
        self.controller_text = _text()
        self.controller_text.setObjectName("welcome_controller")
        self.settings_button = action_button("Controller address…", "choose another controller in Settings")
        self.settings_button.clicked.connect(self.open_settings.emit)
        controller_column.addWidget(self.controller_text)
        controller_column.addLayout(_buttons(self.settings_button))

        agents_box, agents_column = _section("Agents")
        self.agents_text = _text()
        self.agents_text.setObjectName("welcome_agents")
        self.fleet_button = action_button("Open Fleet")
        self.add_button = action_button("Add an agent by address…", "an agent mDNS cannot see: HOST:PORT")
        self.fleet_button.clicked.connect(self.open_fleet.emit)
        self.add_button.clicked.connect(self.add_agent.emit)
        agents_column.addWidget(self.agents_text)
        agents_column.addLayout(_buttons(self.fleet_button, self.add_button))

        datasets_box, datasets_column = _section("Built-in datasets (no upload needed)")
        self.datasets_text = _text()
        self.datasets_text.setObjectName("welcome_datasets")
        datasets_column.addWidget(self.datasets_text)

        demo_box, demo_column = _section("Try it")
        demo_text = _text()
        demo_text.setText(DEMO_TEXT)
        self.demo_button = QPushButton("Run the demo jobs")
        self.demo_button.setObjectName("run_demo")
        self.demo_button.clicked.connect(self.run_demo)
        demo_column.addWidget(demo_text)
        demo_column.addLayout(_buttons(self.demo_button))

        shortcuts = _text()
        shortcuts.setText(html.escape(SHORTCUTS))

        page = QWidget()
        column = QVBoxLayout(page)
        column.setContentsMargins(24, 16, 24, 16)
        for widget in (heading, intro, controller_box, agents_box, datasets_box, demo_box, shortcuts):
            column.addWidget(widget)
        column.addStretch(1)
        page.setMaximumWidth(900)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(page)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)

        bridge.connected.connect(self.set_connected)
        bridge.disconnected.connect(self.set_disconnected)
        bridge.agents_changed.connect(self.set_agents)
        self.controller_text.setText(f"Looking for the controller at <code>{html.escape(bridge.address)}</code>…")
        self.set_agents([])
        self.set_datasets(self.datasets)
        self._update_demo_button()

    # ---- what was found

    def set_connected(self, info: dict[str, Any]) -> None:
        self.connection = info
        address = html.escape(info["address"])
        details = info.get("info") or {}
        version = f", version {html.escape(str(details['version']))}" if details.get("version") else ""
        if info.get("started"):
            text = (
                f"Started a controller on this machine at <code>{address}</code>{version}: nothing answered there. "
                "It keeps running when you close this window (TensorFleet → Quit and stop the cluster stops it), "
                "and other machines' apps and CLIs can use it."
            )
        else:
            text = f"Connected to the controller at <code>{address}</code>{version}."
        if details.get("data_dir"):
            text += f" Its data: <code>{html.escape(str(details['data_dir']))}</code>."
        self.controller_text.setText(text)
        self._update_demo_button()

    def set_disconnected(self, why: str) -> None:
        if self.connection is not None:
            text = f"Lost the controller at <code>{html.escape(self.bridge.address)}</code>: {html.escape(why)}. "
            text += "Reconnecting…"
        else:
            text = (
                f"No controller answers at <code>{html.escape(self.bridge.address)}</code>: {html.escape(why)}.<br>"
                "Start one with <code>tensorfleet serve</code> on the machine that should coordinate the cluster "
                "(it runs a local agent too), or give this app another address (Controller address…). "
                "The app keeps trying."
            )
        self.connection = None
        self.controller_text.setText(text)
        self._update_demo_button()

    def set_agents(self, agents: list[dict[str, Any]]) -> None:
        self.agents = sorted(agents, key=lambda a: a["name"])
        if not agents:
            self.agents_text.setText(AGENT_HELP)
            return
        online = sum(a["state"] == "ONLINE" for a in agents)
        slots = sum(a["slots_total"] for a in agents)
        gpus = sum(a["gpus"] for a in agents)
        lines = [
            f"{len(agents)} agent{'s' if len(agents) != 1 else ''} ({online} online): {slots} slots, "
            f"{gpus} GPU{'s' if gpus != 1 else ''} in all."
        ]
        for a in self.agents[:12]:
            gpu = f", {a['gpus']} GPU{'s' if a['gpus'] != 1 else ''}" if a["gpus"] else ""
            host = f" on {html.escape(a['hostname'])}" if a.get("hostname") else ""
            lines.append(
                f"• <b>{html.escape(a['name'])}</b>{host}: {a['state'].lower()}, "
                f"{a['slots_free']}/{a['slots_total']} slots free{gpu}"
            )
        if len(agents) > 12:
            lines.append(f"… and {len(agents) - 12} more (Fleet lists them all)")
        lines.append("More machines: run <code>tensorfleet-agent</code> on them; mDNS finds them on this LAN.")
        self.agents_text.setText("<br>".join(lines))
        self._update_demo_button()

    def set_datasets(self, datasets: list[dict[str, Any]]) -> None:
        self.datasets = datasets
        lines = []
        for d in datasets:
            summary = summary_without_counts(str(d["summary"] or ""), d.get("rows"), d.get("features"))
            lines.append(
                f"• <b>{html.escape(d['name'])}</b> — {d['task'] or 'task unknown'}"
                + (f", {html.escape(shape_text(d))}" if shape_text(d) else "")
                + (f": {html.escape(summary)}" if summary else "")
            )
        lines.append(
            "Your own data: Datasets → Upload folder… (e.g. class folders of images), Upload file… (CSV or Parquet) "
            "or Add reference… (s3:// or file://)."
        )
        self.datasets_text.setText("<br>".join(lines))

    def _update_demo_button(self) -> None:
        connected = self.connection is not None
        self.demo_button.setEnabled(connected)
        self.demo_button.setToolTip(
            "submit the demo jobs to this controller"
            if connected
            else "needs a controller: start one (tensorfleet serve) or set its address"
        )

    # ---- the demo

    def run_demo(self) -> None:
        async def submit(client: Any) -> list[dict[str, Any]]:
            from tensorfleet_desktop.demo import submit_demo_jobs  # heavy (the CLI demo's modules): only on use

            return await submit_demo_jobs(client)

        def done(jobs: list[dict[str, Any]]) -> None:
            self.demo_button.setEnabled(True)
            self.notify(f"submitted {len(jobs)} demo jobs: {', '.join(j['name'] for j in jobs)}", False)
            self.demo_submitted.emit(jobs)

        def failed(message: str) -> None:
            self.demo_button.setEnabled(True)
            self.notify(f"cannot submit the demo jobs: {message}", True)

        self.demo_button.setEnabled(False)  # one click, one set of jobs
        self.bridge.call(submit, done, failed)


def _buttons(*buttons: QPushButton) -> QHBoxLayout:
    row = QHBoxLayout()
    for button in buttons:
        row.addWidget(button)
    row.addStretch(1)
    return row


def summary_without_counts(summary: str, rows: Any, features: Any) -> str:
    """A dataset's summary less the row and feature counts the line already shows ("150 iris flowers, 4 features,
    3 species" -> "iris flowers, 3 species")."""
    parts = []
    for part in (p.strip() for p in summary.split(",")):
        if features and part == f"{features} features":
            continue
        if rows and part.startswith(f"{rows} "):
            part = part[len(f"{rows} ") :]
        if part:
            parts.append(part)
    return ", ".join(parts)
