"""What every view shares: the bridge, and one way to report what a call did."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QWidget

from tensorfleet_desktop.ui.bridge import Bridge, ClientCall

Notify = Callable[[str, bool], None]  # (message, is_error)


class View(QWidget):
    title = ""
    icon = ""

    def __init__(self, bridge: Bridge, notify: Notify) -> None:
        super().__init__()
        self.bridge = bridge
        self.notify = notify

    def run(
        self,
        fn: ClientCall,
        done: str | Callable[[Any], None] | None = None,
        failed: str = "",
    ) -> None:
        """Call the controller; say `done` (or call it with the result) on success, the error otherwise."""

        def on_result(result: Any) -> None:
            if callable(done):
                done(result)
            elif done:
                self.notify(done, False)

        def on_error(message: str) -> None:
            self.notify(f"{failed}: {message}" if failed else message, True)

        self.bridge.call(fn, on_result, on_error)

    def activated(self) -> None:
        """The view became visible: refresh what is not streamed."""
