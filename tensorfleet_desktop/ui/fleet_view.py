"""Fleet: every agent, its state and live telemetry (CPU, RAM and per-GPU sparklines, disk); add, pair, drain,
remove, and wake a sleeping one by Wake-on-LAN (buttons and a row context menu); the Slurm pools below them."""

from __future__ import annotations

from collections import deque
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from tensorfleet_desktop.ui import theme as themes
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.formatting import STATE_COLORS, clock, human_bytes, percent
from tensorfleet_desktop.ui.plots import MetricPlot
from tensorfleet_desktop.ui.pools_panel import PoolsPanel
from tensorfleet_desktop.ui.table_model import ROW_ROLE, Column, RowTableModel
from tensorfleet_desktop.ui.view import Notify, View
from tensorfleet_desktop.ui.widgets import (
    BarDelegate,
    SparklineDelegate,
    action_button,
    add_row_menu,
    data_table,
    menu_action,
)

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

    def gpu_utils(self, agent: dict[str, Any]) -> list[list[float]] | None:
        """Each GPU's utilisation history (the GPU cell's sparklines); None for an agent without GPU readings."""
        stats = agent.get("gpu_stats") or []
        return [self.get(agent["id"], f"gpu{g['index']} util") for g in stats] or None


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


#: Desk mode and power states (issue 23), beside the shared job/agent colours.
POWER_COLORS = {"OWNER_ACTIVE": "#bc4c00", "SLEEPING": "#6639ba", "WAKING": "#0969da"}
WAKEABLE = ("SLEEPING", "WAKING", "LOST")  # a machine that may be off: a magic packet is worth a try


def _state_color(a: dict[str, Any]) -> str:
    state = str(a.get("state", ""))
    return POWER_COLORS.get(state) or STATE_COLORS.get(state, "")


def can_wake(a: dict[str, Any]) -> bool:
    """Wake is offered for an agent that may be asleep and told us a MAC to send the magic packet to."""
    return a.get("state") in WAKEABLE and bool(a.get("interfaces"))


def _state_tooltip(a: dict[str, Any]) -> str:
    """Why it is in this state (the desk reason, a failed wake-up), and what Wake-on-LAN knows of it."""
    lines = [a["error"]] if a.get("error") else []
    state = a.get("state")
    if state == "SLEEPING":
        lines.append("its machine sleeps (it suspended after idling): Wake sends it a magic packet")
    elif state == "WAKING":
        lines.append(f"magic packet sent at {clock(a.get('last_wake_at') or None)}; waiting for it to answer")
    elif state == "OWNER_ACTIVE" and not a.get("error"):
        lines.append("its owner is using it: it runs no work until idle again")
    for i in a.get("interfaces") or []:
        lines.append(f"{i['name']} {i['mac']}: Wake-on-LAN {'on' if i['wake_on_lan'] else 'off or unknown'}")
    if a.get("wake_count"):
        lines.append(f"woken {a['wake_count']} time(s)")
    return "\n".join(lines)


def _slots(a: dict[str, Any]) -> str:
    return f"{a['slots_total'] - a['slots_free']}/{a['slots_total']}"


def _gpus(a: dict[str, Any]) -> str:
    """Each GPU's utilisation ("37% 80%"), and how many tasks share them by memory ("37% 80% (3 sharing)"), or how
    many GPUs the agent has when it reports no readings."""
    stats = a.get("gpu_stats") or []
    if not stats:
        return str(a.get("gpus") or "-")
    sharing = sum(g.get("shared_tasks", 0) for g in stats)
    return " ".join(f"{g['utilization_percent']:.0f}%" for g in stats) + (f" ({sharing} sharing)" if sharing else "")


def _gpu_tooltip(a: dict[str, Any]) -> str:
    return "\n".join(
        f"GPU {g['index']}: {g['utilization_percent']:.0f}% busy, memory {human_bytes(g['memory_used_bytes'])} of "
        f"{human_bytes(g['memory_total_bytes'])}, {g['temperature_celsius']:.0f} °C, {g['power_watts']:.0f} W"
        + _sharing(g)
        for g in a.get("gpu_stats") or []
    )


def _sharing(g: dict[str, Any]) -> str:
    """Who has the GPU: tasks sharing it by memory (what they were promised), or one task whole."""
    tasks = g.get("shared_tasks", 0)
    if tasks:
        return f"; {human_bytes(g.get('memory_reserved_bytes', 0))} promised to {tasks} sharing task(s)"
    return "; held whole by a task" if g.get("exclusive") else ""


def _ram(a: dict[str, Any]) -> str:
    return f"{a['memory_used_bytes'] / 2**30:.1f}/{human_bytes(a['memory_total_bytes'])}"


def disk_text(a: dict[str, Any]) -> str:
    return f"{human_bytes(a.get('disk_free_bytes', 0))} free"


def disk_used_fraction(a: dict[str, Any]) -> float | None:
    """Used share of the data dir's disk; None while the agent reports free bytes only (its telemetry has no total
    yet): the cell then shows the free space as text, with no made-up bar."""
    total = a.get("disk_total_bytes") or 0
    if total <= 0:
        return None
    return max(0.0, min(1.0, 1.0 - float(a.get("disk_free_bytes", 0)) / float(total)))


def _info(a: dict[str, Any]) -> str:
    """Pairing (or else the version) and source in one short cell (their own columns would not fit 1280 px);
    the tooltip says all."""
    first = f"v{a['agent_version']}" if a.get("paired") and a.get("agent_version") else ""
    if not a.get("paired"):
        first = "UNPAIRED"
    return " · ".join(p for p in (first, str(a.get("source", ""))) if p)


def _info_tooltip(a: dict[str, Any]) -> str:
    lines = [
        f"id {a['id']}",
        f"host {a.get('hostname') or '?'}",
        f"found by {a.get('source', '?')}",
        "paired" if a.get("paired") else "not paired: Pair… with its join token before it runs tasks",
        f"agent version {a.get('agent_version') or '?'}",
    ]
    if a.get("labels"):
        lines.append("labels " + ", ".join(f"{k}={v}" for k, v in a["labels"].items()))
    return "\n".join(lines)


def _name_tooltip(a: dict[str, Any]) -> str:
    return f"{a.get('hostname') or a['name']}\n{a['address']}"


# Column widths that fit the fleet into a 1280 px window beside the 160 px view list; Name takes the rest.
WIDTHS = {"State": 92, "Address": 150, "Slots": 56, "CPU": 70, "RAM": 112, "GPU": 118, "Disk": 118, "Info": 150}
PERCENT_SERIES = ("cpu", "ram", "util", "mem")  # plotted on a fixed 0-100 axis; the others from 0 up


class DiskGauge(QWidget):
    """The selected agent's disk: a bar of the used share when the total is known, the free space in words, and how
    it moved over the kept history (a plot's axis would zoom into megabyte wiggles)."""

    def __init__(self) -> None:
        super().__init__()
        self.bar = QProgressBar()
        self.bar.setObjectName("disk_bar")
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(14)
        self.label = QLabel()
        self.label.setObjectName("disk_text")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Disk (data dir)"))
        layout.addWidget(self.bar, 1)
        layout.addWidget(self.label, 2)

    def show_agent(self, agent: dict[str, Any], free_gib: list[float]) -> None:
        fraction = disk_used_fraction(agent)
        self.bar.setVisible(fraction is not None)
        text = disk_text(agent)
        if fraction is not None:
            self.bar.setValue(int(fraction * 1000))
            text += f" of {human_bytes(agent['disk_total_bytes'])} ({fraction * 100:.0f}% used)"
        if len(free_gib) >= 2:
            change = (free_gib[-1] - free_gib[0]) * 2**30
            if abs(change) >= 2**20:
                more = "more" if change > 0 else "less"
                text += f" · {human_bytes(abs(change))} {more} than {len(free_gib)} samples ago"
        self.label.setText(text)


class FleetView(View):
    title = "Fleet"
    icon = "fleet"

    def __init__(self, bridge: Bridge, notify: Notify) -> None:
        super().__init__(bridge, notify)
        self.history = History()
        columns = [
            Column("Name", lambda a: a["name"], tooltip=_name_tooltip),
            Column("State", lambda a: a["state"], tooltip=_state_tooltip, color=_state_color),
            Column("Address", lambda a: a["address"]),
            Column(
                "Slots",
                _slots,
                sort=lambda a: a["slots_total"] - a["slots_free"],
                tooltip=lambda a: f"{a.get('tasks_running', 0)} task(s) running\n" + "\n".join(a.get("running") or []),
            ),
            Column(
                "CPU",
                lambda a: f"{a['cpu_percent']:.0f}%",
                sort=lambda a: a["cpu_percent"],
                extra=lambda a: self.history.get(a["id"], "cpu"),
            ),
            Column(
                "RAM",
                _ram,
                sort=lambda a: a["memory_used_bytes"],
                extra=lambda a: self.history.get(a["id"], "ram"),
                tooltip=lambda a: (
                    f"{human_bytes(a['memory_used_bytes'])} used of {human_bytes(a['memory_total_bytes'])}"
                ),
            ),
            Column(
                "GPU",
                _gpus,
                sort=lambda a: max((g["utilization_percent"] for g in a.get("gpu_stats") or []), default=-1.0),
                extra=lambda a: self.history.gpu_utils(a),
                tooltip=_gpu_tooltip,
            ),
            Column(
                "Disk",
                disk_text,
                sort=lambda a: a.get("disk_free_bytes", 0),
                extra=disk_used_fraction,
                tooltip=lambda a: f"{human_bytes(a.get('disk_free_bytes', 0))} free in the agent's data dir",
            ),
            Column("Info", _info, tooltip=_info_tooltip),
        ]
        self.model = RowTableModel(columns)
        self.column = {c.title: i for i, c in enumerate(columns)}
        self.table, self.proxy = data_table(self.model, name="agents_table")
        header = self.table.horizontalHeader()
        header.setStretchLastSection(False)
        header.setMinimumSectionSize(40)
        header.setSectionResizeMode(self.column["Name"], QHeaderView.ResizeMode.Stretch)
        for title, width in WIDTHS.items():
            self.table.setColumnWidth(self.column[title], width)
        self._delegates = {
            "CPU": SparklineDelegate("#1f6feb"),
            "RAM": SparklineDelegate("#8250df"),
            "GPU": SparklineDelegate("#2ea043"),
            "Disk": BarDelegate(),
        }
        for title, delegate in self._delegates.items():
            self.table.setItemDelegateForColumn(self.column[title], delegate)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._show_detail())
        add_row_menu(self.table, self._row_actions)

        self.add_button = action_button("Add…", "add an agent by HOST:PORT (one mDNS cannot see)")
        self.pair_button = action_button("Pair…", "pair with the selected agent using its join token")
        self.drain_button = action_button("Drain", "finish running tasks, accept no new ones")
        self.remove_button = action_button("Remove", "forget the selected agent")
        self.wake_button = action_button("Wake", "send the selected sleeping agent's machine a Wake-on-LAN packet")
        self.wake_button.setEnabled(False)
        self.wake_button.clicked.connect(self.wake_agent)
        self.add_button.clicked.connect(self.add_agent)
        self.pair_button.clicked.connect(self.pair_agent)
        self.drain_button.clicked.connect(self.drain_agent)
        self.remove_button.clicked.connect(self.remove_agent)
        bar = QHBoxLayout()
        for b in (self.add_button, self.pair_button, self.drain_button, self.remove_button, self.wake_button):
            bar.addWidget(b)
        bar.addStretch(1)
        self.summary = QLabel()
        bar.addWidget(self.summary)

        self.detail_title = QLabel("Select an agent to see its telemetry")
        self.detail_title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.disk = DiskGauge()
        self.disk.hide()
        self.plots: dict[str, MetricPlot] = {}
        self.plot_grid = QGridLayout()
        detail = QWidget()
        detail_layout = QVBoxLayout(detail)
        detail_layout.addWidget(self.detail_title)
        detail_layout.addWidget(self.disk)
        detail_layout.addLayout(self.plot_grid, 1)

        self.pools = PoolsPanel(bridge, notify)  # capacity beyond the LAN: Slurm pools and their allocations
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(detail)
        split.addWidget(self.pools)
        split.setSizes([300, 260, 180])
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
            self.wake_button.setEnabled(False)
            return
        agent = self.model.rows[self.model.find(agent["id"])] if self.model.find(agent["id"]) >= 0 else agent
        self.wake_button.setEnabled(can_wake(agent))
        running = ", ".join(agent.get("running") or []) or "none"
        self.detail_title.setText(
            f"<b>{agent['name']}</b> · {agent['state']} · {agent['address']} · id {agent['id'][:16]} · "
            f"slots {_slots(agent)} · running: {running}"
            + (f"<br><span style='color:{themes.error_color()}'>{agent['error']}</span>" if agent["error"] else "")
        )
        self.disk.show_agent(agent, self.history.get(agent["id"], "disk"))
        self.disk.show()
        names = ["cpu", "ram"] + [
            f"gpu{g['index']} {m}" for g in agent.get("gpu_stats") or [] for m in ("util", "mem", "temp", "power")
        ]
        titles = {"cpu": "CPU %", "ram": "RAM %"}
        for i, name in enumerate(names):
            plot = self.plots.get(name)
            if plot is None:
                plot = self.plots[name] = MetricPlot(x_label="")
                plot.setMinimumHeight(90)
                unit = {"util": " %", "mem": " %", "temp": " °C", "power": " W"}.get(name.rpartition(" ")[2], "")
                plot.plotItem.setTitle(titles.get(name, name + unit), size="9pt")
                plot.legend.hide()
                plot.setMouseEnabled(x=True, y=False)
                self.plot_grid.addWidget(plot, i // 4, i % 4)
            values = self.history.get(agent["id"], name)
            plot.set_series(name, range(len(values)), values)
            # An axis from zero: a steady 64 °C must not look like a storm between 63.8 and 64.2.
            top = 100.0 if name.endswith(PERCENT_SERIES) else max([1.0, *values]) * 1.2
            plot.setYRange(0, top, padding=0.02)
        for name, plot in self.plots.items():
            plot.setVisible(name in names)

    # ---- actions

    def _row_actions(self, rows: list[dict[str, Any]]) -> list[QAction | None]:
        agent = rows[0] if rows else None
        if agent is None:
            return []
        wake = [menu_action("Wake", self.wake_agent)] if can_wake(agent) else []
        return [
            *wake,
            menu_action("Pair…", self.pair_agent, agent["state"] != "REFUSED" or not agent.get("paired")),
            menu_action("Drain", self.drain_agent, agent["state"] == "ONLINE"),
            menu_action("Remove…", self.remove_agent),
            None,
            menu_action("Copy address", lambda: self.copy_address(agent)),
        ]

    def wake_agent(self) -> None:
        """A magic packet, sent by the controller (the bridge's thread; the window never waits on it)."""
        agent = self.selected()
        if agent is None or not can_wake(agent):
            return
        self.run(
            lambda c: c.wake_agent(agent["id"]),
            f"magic packet sent to {agent['name']}: waking",
            f"cannot wake {agent['name']}",
        )

    def copy_address(self, agent: dict[str, Any]) -> None:
        QGuiApplication.clipboard().setText(str(agent["address"]))
        self.notify(f"copied {agent['address']}", False)

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
