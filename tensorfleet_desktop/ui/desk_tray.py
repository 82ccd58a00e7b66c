"""The desk-mode tray icon: the workstation's owner sees whether the agent lends the machine, and pauses or resumes
lending, without a terminal (`tensorfleet desk-tray`).

It talks to the agent on this machine through its desk control socket (tensorfleet_agent.desk.control, 0600 in the
agent's data dir: only the owner's account). Each ask runs on Qt's thread pool and its answer comes back as a
queued signal: the GUI thread never waits on the socket, even when the agent is busy or gone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from tensorfleet_agent.desk.control import ask

POLL_MS = 2000
#: state -> (colour of the dot, what the menu's first line says)
STATES = {
    "lending": ("#2e9d4f", "Lending this machine to the cluster"),
    "owner_active": ("#e08a00", "You are using this machine: not lending"),
    "paused": ("#7a7a7a", "Lending paused"),
    "unreachable": ("#c0392b", "No agent in desk mode answers"),
}


class _Answers(QObject):
    answered = Signal(str, object)  # op, the answer dict (or {"error": ...})


class _Ask(QRunnable):
    def __init__(self, data_dir: Path, op: str, answers: _Answers) -> None:
        super().__init__()
        self.data_dir, self.op, self.answers = data_dir, op, answers

    def run(self) -> None:
        try:
            answer: dict[str, Any] = ask(self.data_dir, self.op, timeout=3.0)
        except (OSError, ValueError) as exc:
            answer = {"state": "unreachable", "reason": f"{exc}", "unreachable": True}
        self.answers.answered.emit(self.op, answer)


def _dot(colour: str) -> QIcon:
    pixmap = QPixmap(32, 32)
    pixmap.fill(QColor(0, 0, 0, 0))
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QColor(colour))
    painter.setPen(QColor("#202020"))
    painter.drawEllipse(3, 3, 26, 26)
    painter.end()
    return QIcon(pixmap)


class DeskTray(QObject):
    """The icon, its menu (state, why, Pause/Resume lending, Quit) and the poll of the agent's state."""

    quit_requested = Signal()

    def __init__(self, data_dir: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.data_dir = data_dir
        self.state = ""
        self.reason = ""
        self._answers = _Answers()
        self._answers.answered.connect(self._show)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)  # one ask at a time, in order (a pause is never overtaken by a poll)
        self.icons = {state: _dot(colour) for state, (colour, _) in STATES.items()}
        self.menu = QMenu()
        self.headline = QAction("Asking the agent…", self.menu)
        self.headline.setEnabled(False)
        self.why = QAction("", self.menu)
        self.why.setEnabled(False)
        self.toggle = QAction("Pause lending", self.menu)
        self.toggle.setEnabled(False)
        self.toggle.triggered.connect(self._toggle)
        quit_action = QAction("Quit (the agent keeps running)", self.menu)
        quit_action.triggered.connect(self.quit_requested.emit)
        for action in (self.headline, self.why):
            self.menu.addAction(action)
        self.menu.addSeparator()
        self.menu.addAction(self.toggle)
        self.menu.addAction(quit_action)
        self.icon = QSystemTrayIcon(self.icons["unreachable"], self)
        self.icon.setContextMenu(self.menu)
        self.icon.setToolTip("TensorFleet desk mode")
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)

    def start(self) -> None:
        self.icon.show()
        self.timer.start()
        self.poll()

    def poll(self) -> None:
        self._pool.start(_Ask(self.data_dir, "status", self._answers))

    def _toggle(self) -> None:
        self.toggle.setEnabled(False)  # until the agent's answer says what it is now
        self._pool.start(_Ask(self.data_dir, "resume" if self.state == "paused" else "pause", self._answers))

    def _show(self, op: str, answer: dict[str, Any]) -> None:
        if "error" in answer:  # the agent refused the request: keep the state, say why
            self.why.setText(str(answer["error"]))
            self.toggle.setEnabled(self.state not in ("", "unreachable"))
            return
        state = str(answer.get("state", "unreachable"))
        state = state if state in STATES else "unreachable"
        self.state, self.reason = state, str(answer.get("reason", ""))
        headline = STATES[state][1]
        self.icon.setIcon(self.icons[state])
        self.headline.setText(headline)
        self.why.setText(self.reason[:200])
        self.icon.setToolTip(f"TensorFleet: {headline}" + (f"\n{self.reason[:200]}" if self.reason else ""))
        self.toggle.setText("Resume lending" if state == "paused" else "Pause lending")
        self.toggle.setEnabled(state != "unreachable")

    def stop(self) -> None:
        self.timer.stop()
        self._pool.waitForDone(4000)
        self.icon.hide()


def run(data_dir: Path) -> int:
    """`tensorfleet desk-tray`: the icon until Quit (the agent keeps running)."""
    import sys

    from PySide6.QtWidgets import QApplication

    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv[:1])
    if not QSystemTrayIcon.isSystemTrayAvailable():
        print(
            "tensorfleet desk-tray: this desktop has no system tray; use `tensorfleet-agent desk status|pause|resume`",
            file=sys.stderr,
        )
        return 1
    app.setQuitOnLastWindowClosed(False)
    tray = DeskTray(data_dir)
    tray.quit_requested.connect(app.quit)
    tray.start()
    code = app.exec()
    tray.stop()
    return int(code)
