"""Owner input on Wayland or a text console: logind's IdleHint of the active session, through `loginctl`."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time

from tensorfleet_agent.desk.signals import Reading

log = logging.getLogger(__name__)
TIMEOUT = 2.0


class LogindIdle:
    name = "logind"
    period = 1.0

    def __init__(self, session: str = "") -> None:
        self.session = session or os.environ.get("XDG_SESSION_ID", "")
        self._warned = False

    def _loginctl(self, *args: str) -> str | None:
        exe = shutil.which("loginctl")
        if exe is None:
            return None
        try:
            done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._warn(str(exc))
            return None
        if done.returncode != 0:
            self._warn(done.stderr.strip() or f"loginctl exited with {done.returncode}")
            return None
        return done.stdout

    def _warn(self, why: str) -> None:
        if not self._warned:
            log.warning("desk mode: cannot read logind's idle hint: %s", why)
            self._warned = True

    def read(self) -> Reading | None:
        session = self.session
        if not session:
            out = self._loginctl("show-seat", "seat0", "-p", "ActiveSession", "--value")
            session = (out or "").strip()
            if not session:
                return None
        out = self._loginctl("show-session", session, "-p", "IdleHint", "-p", "IdleSinceHint")
        if out is None:
            return None
        return parse_idle_hint(out, time.time())

    def close(self) -> None:
        pass


def parse_idle_hint(output: str, now: float) -> Reading | None:
    """`IdleHint=yes|no` and `IdleSinceHint=<unix microseconds>` -> seconds idle (0 while not idle)."""
    values = dict(line.strip().partition("=")[::2] for line in output.splitlines() if "=" in line)
    hint = values.get("IdleHint", "")
    if hint not in ("yes", "no"):
        return None
    if hint == "no":
        return Reading(idle_seconds=0.0)
    try:
        since = int(values.get("IdleSinceHint", "0")) / 1e6
    except ValueError:
        return None
    return Reading(idle_seconds=max(0.0, now - since) if since > 0 else 0.0)
