"""Fleet: every agent, its state and live telemetry; add, pair, drain, remove."""

from __future__ import annotations

from collections import deque
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.formatting import human_bytes, percent, state_color
from tensorfleet_desktop.ui.plots import MetricPlot
from tensorfleet_desktop.ui.table_model import ROW_ROLE, Column, RowTableModel
from tensorfleet_desktop.ui.view import Notify, View
from tensorfleet_desktop.ui.widgets import SparklineDelegate, action_button, data_table

HISTORY = 120  # samples kept per agent (two minutes at the default 1 s telemetry period)


class History:
    """Recent telemetry per agent: the sparklines' data (plain Python; the view reads it)."""

    def __init__(self) -> None:
        self.samples: dict[str, dict[str, deque[float]]] = {}

    def add(self, agent: dict[str, Any]) -> None:
        series = self.samples.setdefault(agent["id"], {})

        def put(name: str, value: float) -> None:
            series.setdefault(name, deque(maxlen=HISTORY)).append(value)

        put("cpu", agent["cpu_percent"])
        put("ram", percent(agent["memory_used_bytes"], agent["memory_total_bytes"]))
        put("disk", agent.get("disk_free_bytes", 0) / 2**30)
        for gpu in agent.get("gpu_stats") or []:
            i = gpu["index"]
            put(f"gpu{i} util", gpu["utilization_percent"])
            put(f"gpu{i} mem", percent(gpu["memory_used_bytes"], gpu["memory_total_bytes"]))
            put(f"gpu{i} temp", gpu["temperature_celsius"])
            put(f"gpu{i} power", gpu["power_watts"])

    def get(self, agent_id: str, name: str) -> list[float]:
        return list(self.samples.get(agent_id, {}).get(name, ()))


class PairDialog(QDialog):
    def __init__(self, agent: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Pair with {agent['name']}")
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("tfj-… (printed by `tensorfleet-agent token` on that machine)")
        self.force = QCheckBox("re-pair even if its certificate changed")
        form = QFormLayout(self)
        form.addRow(QLabel(f"Agent {agent['name']} ({agent['address']}), id {agent['id'][:12]}"))
        form.addRow("Join token", self.token)
        form.addRow(self.force)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)


def _slots(a: dict[str, Any]) -> str:
    return f"{a['slots_total'] - a['slots_free']}/{a['slots_total']}"


def _gpus(a: dict[str, Any]) -> str:
    stats = a.get("gpu_stats") or []
    if not stats:
        return str(a["gpus"] or "-")
    return " ".join(f"{g['utilization_percent']:.0f}%" for g in stats)


class FleetView(View):
    title = "Fleet"
    icon = "fleet"

    def __init__(self, bridge: Bridge, notify: Notify) -> None:
        super().__init__(bridge, notify)
        self.history = History()
        self.model = RowTableModel(
            [
                Column("Name", lambda a: a["name"], tooltip=lambda a: a["hostname"]),
                Column("State", lambda a: a["state"], tooltip=lambda a: a["error"], color=state_color),
                Column("Source", lambda a: a["source"]),
                Column("Paired", lambda a: "yes" if a["paired"] else "NO"),
                Column("Address", lambda a: a["address"]),
                Column("Slots", _slots, sort=lambda a: a["slots_total"] - a["slots_free"]),
                Column(
                    "Tasks",
                    lambda a: str(a["tasks_running"]),
                    sort=lambda a: a["tasks_running"],
                    tooltip=lambda a: "\n".join(a.get("running") or []),
                ),
                Column(
                    "CPU",
                    lambda a: f"{a['cpu_percent']:.0f}%",
                    sort=lambda a: a["cpu_percent"],
                    extra=lambda a: self.history.get(a["id"], "cpu"),
                ),
                Column(
                    "RAM",
                    lambda a: f"{human_bytes(a['memory_used_bytes'])} / {human_bytes(a['memory_total_bytes'])}",
                    sort=lambda a: a["memory_used_bytes"],
                    extra=lambda a: self.history.get(a["id"], "ram"),
                ),
                Column(
                    "Disk free",
                    lambda a: human_bytes(a.get("disk_free_bytes", 0)),
                    sort=lambda a: a.get("disk_free_bytes", 0),
                ),
                Column("GPUs", _gpus),
                Column("Version", lambda a: a["agent_version"]),
            ]
        )
        self.table, self.proxy = data_table(self.model, name="agents_table")
        self.table.setColumnWidth(8, 180)
        self._delegates = [SparklineDelegate("#1f6feb"), SparklineDelegate("#8250df")]
        self.table.setItemDelegateForColumn(7, self._delegates[0])
        self.table.setItemDelegateForColumn(8, self._delegates[1])
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._show_detail())

        self.add_button = action_button("Add…", "add an agent by HOST:PORT (one mDNS cannot see)")
        self.pair_button = action_button("Pair…", "pair with the selected agent using its join token")
        self.drain_button = action_button("Drain", "finish running tasks, accept no new ones")
        self.remove_button = action_button("Remove", "forget the selected agent")
        self.add_button.clicked.connect(self.add_agent)
        self.pair_button.clicked.connect(self.pair_agent)
        self.drain_button.clicked.connect(self.drain_agent)
        self.remove_button.clicked.connect(self.remove_agent)
        bar = QHBoxLayout()
        for b in (self.add_button, self.pair_button, self.drain_button, self.remove_button):
            bar.addWidget(b)
        bar.addStretch(1)
        self.summary = QLabel()
        bar.addWidget(self.summary)

        self.detail_title = QLabel("Select an agent to see its telemetry")
        self.detail_title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.plots: dict[str, MetricPlot] = {}
        self.plot_grid = QGridLayout()
        detail = QWidget()
        detail_layout = QVBoxLayout(detail)
        detail_layout.addWidget(self.detail_title)
        detail_layout.addLayout(self.plot_grid, 1)

        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(detail)
        split.setSizes([300, 260])
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(split, 1)

        bridge.agents_changed.connect(self.set_agents)
        bridge.agent_event.connect(self.on_agent_event)

    # ---- data

    def set_agents(self, agents: list[dict[str, Any]]) -> None:
        self.model.set_rows(agents)
        online = sum(1 for a in agents if a["state"] == "ONLINE")
        slots = sum(a["slots_total"] for a in agents if a["state"] == "ONLINE")
        plural = "" if len(agents) == 1 else "s"
        self.summary.setText(f"{len(agents)} agent{plural} · {online} online · {slots} slot{'' if slots == 1 else 's'}")
        self._show_detail()

    def on_agent_event(self, event: dict[str, Any]) -> None:
        if event["kind"] in ("telemetry", "added", "back"):
            self.history.add(event["agent"])

    def selected(self) -> dict[str, Any] | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].data(ROW_ROLE) if rows else None

    def state_of(self, name_or_id: str) -> str:
        for row in self.model.rows:
            if name_or_id in (row["id"], row["name"]):
                return str(row["state"])
        return ""

    def _show_detail(self) -> None:
        agent = self.selected()
        if agent is None:
            return
        agent = self.model.rows[self.model.find(agent["id"])] if self.model.find(agent["id"]) >= 0 else agent
        running = ", ".join(agent.get("running") or []) or "none"
        self.detail_title.setText(
            f"<b>{agent['name']}</b> · {agent['state']} · {agent['address']} · id {agent['id'][:16]} · "
            f"slots {_slots(agent)} · running: {running}"
            + (f"<br><span style='color:#d1242f'>{agent['error']}</span>" if agent["error"] else "")
        )
        names = ["cpu", "ram", "disk"] + [
            f"gpu{g['index']} {m}" for g in agent.get("gpu_stats") or [] for m in ("util", "mem", "temp", "power")
        ]
        titles = {"cpu": "CPU %", "ram": "RAM %", "disk": "disk free GiB"}
        for i, name in enumerate(names):
            plot = self.plots.get(name)
            if plot is None:
                plot = self.plots[name] = MetricPlot(x_label="")
                plot.setMinimumHeight(90)
                plot.plotItem.setTitle(titles.get(name, name), size="9pt")
                plot.legend.hide()
                self.plot_grid.addWidget(plot, i // 4, i % 4)
            values = self.history.get(agent["id"], name)
            plot.set_series(name, range(len(values)), values)
        for name, plot in self.plots.items():
            plot.setVisible(name in names)

    # ---- actions

    def add_agent(self) -> None:
        address, ok = QInputDialog.getText(self, "Add an agent", "HOST:PORT of a tensorfleet-agent:")
        if ok and address.strip():
            self.add_address(address.strip())

    def add_address(self, address: str) -> None:
        self.run(lambda c: c.add_agent(address), f"added agent {address}", f"cannot add {address}")

    def pair_agent(self) -> None:
        agent = self.selected()
        if agent is None:
            self.notify("select an agent to pair with first", True)
            return
        dialog = PairDialog(agent, self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            token, force = dialog.token.text().strip(), dialog.force.isChecked()
            self.run(
                lambda c: c.pair_agent(agent["id"], token, force), f"paired with {agent['name']}", "pairing refused"
            )

    def drain_agent(self) -> None:
        agent = self.selected()
        if agent is not None:
            self.run(lambda c: c.drain_agent(agent["id"]), f"draining {agent['name']}", "cannot drain")

    def remove_agent(self) -> None:
        agent = self.selected()
        if agent is None:
            return
        answer = QMessageBox.question(self, "Remove agent", f"Forget agent {agent['name']} ({agent['address']})?")
        if answer == QMessageBox.StandardButton.Yes:
            self.run(lambda c: c.remove_agent(agent["id"]), f"removed {agent['name']}", "cannot remove")
