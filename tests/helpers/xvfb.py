"""A private virtual X display (Xvfb, no TCP) and owner input on it (xdotool), for desk mode's tests and bench."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

HELPERS = Path(__file__).parent


def missing_tools() -> str:
    """Why desk mode's X tests cannot run here ("" when they can)."""
    lacking = [tool for tool in ("Xvfb", "xdotool") if shutil.which(tool) is None]
    if lacking:
        return f"desk mode's X11 tests need {' and '.join(lacking)} (Debian: xvfb, xdotool; .ci/run installs them)"
    try:
        import Xlib  # noqa: F401
    except ImportError:
        return "desk mode's X11 tests need python-xlib (the desk extra)"
    return ""


class Xvfb:
    """Xvfb on the first free display number (-displayfd), stopped by stop()."""

    def __init__(self) -> None:
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-nolisten", "tcp", "-noreset", "-screen", "0", "640x480x24"],
            pass_fds=(write,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write)
        with os.fdopen(read) as fh:
            number = fh.readline().strip()
        if not number:
            self.stop()
            raise RuntimeError("Xvfb did not start")
        self.display = f":{number}"

    def input(self) -> float:
        """Move the pointer (the owner is back); the time just before the event was sent."""
        at = time.time()
        x = 10 + int(at * 1000) % 300
        subprocess.run(["xdotool", "mousemove", str(x), "20"], env={**os.environ, "DISPLAY": self.display}, check=True)
        return at

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
