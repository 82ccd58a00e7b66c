"""Pools in the Fleet view: the Slurm pools the controller allocates nodes from, each allocation's state and why it
waits (Slurm's reason), its nodes, the agents that joined from it and the jobs it was asked for; add and remove.
Pools are not streamed: the panel asks again every few seconds while it is shown (through the bridge's thread, the
window never waits), and at once after a change."""

from __future__ import annotations

import shlex
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from tensorfleet_desktop.cli.pools import LOGIN, NAME, SLURM_TIME, duration_seconds
from tensorfleet_desktop.ui import theme as themes
from tensorfleet_desktop.ui.bridge import Bridge
from tensorfleet_desktop.ui.formatting import clock
from tensorfleet_desktop.ui.table_model import ROW_ROLE, Column, RowTableModel
from tensorfleet_desktop.ui.view import Notify
from tensorfleet_desktop.ui.widgets import action_button, add_row_menu, data_table, menu_action

REFRESH_MS = 5000  # allocations change on Slurm's time (seconds to minutes): a glance every 5 s is enough
STATE_COLORS = {"PENDING": "#bf8700", "CONFIGURING": "#bf8700", "RUNNING": "#2ea043", "COMPLETING": "#8c959f"}


def nodes_text(pool: dict[str, Any]) -> str:
    return f"{sum(a['nodes'] for a in pool['allocations'])}/{pool['max_nodes']}"


def idle_text(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def allocations_text(pool: dict[str, Any]) -> str:
    """'1234 RUNNING, 1240 PENDING (Resources)', or 'none (scaled to zero)'."""
    parts = [f"{a['id']} {a['state']}" + (f" ({a['reason']})" if a["reason"] else "") for a in pool["allocations"]]
    return ", ".join(parts) or "none (scaled to zero)"


def _where(pool: dict[str, Any]) -> str:
    account = f" · account {pool['account']}" if pool["account"] else ""
    login = f" · via ssh {pool['login']}" if pool["login"] else " · Slurm on the controller's machine"
    sbatch = f"\nsbatch {shlex.join(pool['sbatch_args'])}" if pool["sbatch_args"] else ""
    return f"{pool['kind']} partition {pool['partition']}{account}{login}{sbatch}"


class AddPoolDialog(QDialog):
    """The fields of `tensorfleet pools add slurm`, checked as the CLI checks them before anything is sent."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add a Slurm pool")
        self.name = QLineEdit()
        self.name.setPlaceholderText("gpu-a100")
        self.partition = QLineEdit()
        self.account = QLineEdit()
        self.max_nodes = QSpinBox()
        self.max_nodes.setRange(1, 10_000)
        self.time_limit = QLineEdit()
        self.time_limit.setPlaceholderText("the partition's default (e.g. 4:00:00)")
        self.sbatch_args = QLineEdit()
        self.sbatch_args.setPlaceholderText("--gres=gpu:1 --qos=normal")
        self.idle = QLineEdit("5m")
        self.login = QLineEdit()
        self.login.setPlaceholderText("user@login-node (empty: Slurm's commands run on the controller's machine)")
        self.problem = QLabel()
        self.problem.setStyleSheet(f"color: {themes.error_color()}")
        self.problem.setWordWrap(True)
        form = QFormLayout()
        for label, field in (
            ("Name", self.name),
            ("Partition", self.partition),
            ("Account", self.account),
            ("Max nodes", self.max_nodes),
            ("Time limit", self.time_limit),
            ("sbatch arguments", self.sbatch_args),
            ("Idle timeout", self.idle),
            ("Login node", self.login),
        ):
            form.addRow(label, field)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.problem)
        layout.addWidget(buttons)
        self.spec: dict[str, Any] = {}

    def check(self) -> str:
        """What is wrong, naming the field; "" when the pool can be sent (the spec is then in `self.spec`)."""
        name, partition = self.name.text().strip(), self.partition.text().strip()
        time_limit, login = self.time_limit.text().strip(), self.login.text().strip()
        if not NAME.match(name):
            return "Name: 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
        if not partition or any(c.isspace() or c == "," for c in partition):
            return "Partition: one Slurm partition name"
        if time_limit and not SLURM_TIME.match(time_limit):
            return "Time limit: Slurm's format (MM, HH:MM:SS, D-HH, D-HH:MM:SS, UNLIMITED)"
        try:
            sbatch = shlex.split(self.sbatch_args.text())
        except ValueError as exc:
            return f"sbatch arguments: {exc}"
        if any(not a.startswith("-") for a in sbatch):
            return "sbatch arguments: options only, such as --gres=gpu:1"
        idle = duration_seconds(self.idle.text())
        if idle is None:
            return "Idle timeout: a duration above zero such as 30s, 5m or 1h"
        if login and not LOGIN.match(login):
            return "Login node: USER@HOST or HOST"
        self.spec = {"name": name, "partition": partition, "account": self.account.text().strip(),
                     "max_nodes": self.max_nodes.value(), "time_limit": time_limit, "sbatch_args": sbatch,
                     "idle_timeout_seconds": idle, "login": login}  # fmt: skip
        return ""

    def _accept(self) -> None:
        problem = self.check()
        self.problem.setText(problem)
        if not problem:
            self.accept()


class PoolsPanel(QWidget):
    """The pools table, the selected pool's allocations under it, and Add / Remove."""

    def __init__(self, bridge: Bridge, notify: Notify) -> None:
        super().__init__()
        self.setObjectName("pools_panel")
        self.bridge = bridge
        self.notify = notify
        self.model = RowTableModel(
            [
                Column("Pool", lambda p: p["name"], tooltip=_where),
                Column("Kind", lambda p: p["kind"]),
                Column("Partition", lambda p: p["partition"] + (f" ({p['account']})" if p["account"] else "")),
                Column("Nodes", nodes_text, sort=lambda p: sum(a["nodes"] for a in p["allocations"])),
                Column("Allocations", allocations_text, tooltip=allocations_text),
                Column("Idle timeout", lambda p: idle_text(p["idle_timeout_seconds"])),
                Column("Login", lambda p: p["login"] or "-"),
                Column("Problem", lambda p: p["error"], color=lambda p: themes.error_color() if p["error"] else ""),
            ],
            key=lambda p: str(p["name"]),
        )
        self.table, self.proxy = data_table(self.model, name="pools_table")
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._show_allocations())
        add_row_menu(self.table, self._row_actions)
        self.allocations = RowTableModel(
            [
                Column("Allocation", lambda a: a["id"]),
                Column("State", lambda a: a["state"], color=lambda a: STATE_COLORS.get(a["state"], "")),
                Column("Reason", lambda a: a["reason"] or "-"),
                Column("Nodes", lambda a: str(a["nodes"]), sort=lambda a: a["nodes"]),
                Column("Submitted", lambda a: clock(a["submitted_at"]) if a["submitted_at"] else "-"),
                Column("Started", lambda a: clock(a["started_at"]) if a["started_at"] else "-"),
                Column("Agents", lambda a: ", ".join(x[:12] for x in a["agents"]) or "-"),
                Column("Jobs", lambda a: ", ".join(j[:12] for j in a["jobs"]) or "-",
                       tooltip=lambda a: "\n".join(a["jobs"])),
            ]
        )  # fmt: skip
        self.allocations_table, _ = data_table(self.allocations, name="pool_allocations_table")
        self.add_button = action_button("Add pool…", "a Slurm partition to allocate nodes from when the LAN is full")
        self.remove_button = action_button("Remove pool", "forget the selected pool (refused while it runs work)")
        self.add_button.clicked.connect(self.add_pool)
        self.remove_button.clicked.connect(self.remove_pool)
        self.summary = QLabel()
        self.detail = QLabel("Select a pool to see its allocations")
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        bar = QHBoxLayout()
        for widget in (self.add_button, self.remove_button):
            bar.addWidget(widget)
        bar.addStretch(1)
        bar.addWidget(self.summary)
        below = QWidget()
        below_layout = QVBoxLayout(below)
        below_layout.setContentsMargins(0, 0, 0, 0)
        below_layout.addWidget(self.detail)
        below_layout.addWidget(self.allocations_table, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(below)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(split, 1)
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)

    # ---- data

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self.refresh()
        self.timer.start()

    def hideEvent(self, event: Any) -> None:
        self.timer.stop()
        super().hideEvent(event)

    def refresh(self) -> None:
        self.bridge.call(lambda c: c.list_pools(), self.set_pools, lambda _message: None)  # offline: the banner says

    def set_pools(self, pools: list[dict[str, Any]]) -> None:
        self.model.set_rows(pools)
        nodes = sum(a["nodes"] for p in pools for a in p["allocations"])
        self.summary.setText(f"{len(pools)} pool(s) · {nodes} node(s) allocated")
        self._show_allocations()

    def selected(self) -> dict[str, Any] | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        pool: dict[str, Any] = rows[0].data(ROW_ROLE)
        at = self.model.find(pool["name"])
        return self.model.rows[at] if at >= 0 else None

    def _show_allocations(self) -> None:
        pool = self.selected()
        self.remove_button.setEnabled(pool is not None)
        if pool is None:
            self.allocations.set_rows([])
            self.detail.setText("Select a pool to see its allocations")
            return
        self.allocations.set_rows(pool["allocations"])
        self.detail.setText(f"<b>{pool['name']}</b> · {_where(pool)} · up to {pool['max_nodes']} node(s)"
                            + (f"<br><span style='color:{themes.error_color()}'>{pool['error']}</span>"
                               if pool["error"] else ""))  # fmt: skip

    # ---- actions

    def _row_actions(self, rows: list[dict[str, Any]]) -> list[Any]:
        return [menu_action("Remove pool…", self.remove_pool)] if rows else []

    def add_pool(self) -> None:
        dialog = AddPoolDialog(self)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.send_pool(dialog.spec)

    def send_pool(self, spec: dict[str, Any]) -> None:
        fields = dict(spec)
        name, partition = fields.pop("name"), fields.pop("partition")

        def added(pool: dict[str, Any]) -> None:
            self.notify(f"added pool {pool['name']}", False)
            self.refresh()

        self.bridge.call(
            lambda c: c.add_pool(name, partition, **fields),
            added,
            lambda message: self.notify(f"cannot add pool {name}: {message}", True),
        )

    def remove_pool(self, confirm: bool = True) -> None:
        pool = self.selected()
        if pool is None:
            return
        name = pool["name"]
        if confirm and (
            QMessageBox.question(
                self, "Remove pool", f"Forget pool {name}? (Refused while one of its allocations runs work.)"
            )
            != QMessageBox.StandardButton.Yes
        ):
            return

        def removed(_pool: dict[str, Any]) -> None:
            self.notify(f"removed pool {name}", False)
            self.refresh()

        self.bridge.call(
            lambda c: c.remove_pool(name),
            removed,
            lambda message: self.notify(f"cannot remove pool {name}: {message}", True),
        )
