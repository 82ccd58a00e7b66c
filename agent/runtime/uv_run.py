"""Run one uv command for an env build: its output streamed line by line, its failure classified.

A failed uv run becomes an EnvBuildError whose `permanent` flag tells the scheduler whether another try (here or on
another agent) can help. The rule, from uv's exit status and its own message lines:

- uv killed by a signal, a build that ran past its time limit, or any line that names a transport failure
  (connect/DNS/TLS errors, timeouts, HTTP 5xx/408/429, "Failed to fetch"/"Failed to download" without a 4xx, a
  full disk) -> permanent=False: a flaky mirror or a busy agent; the caller retries.
- any other non-zero exit -> permanent=True: uv ran to its end and refused the requirements themselves (no
  solution, a parse error, a build failure, a 4xx on a pinned URL); no agent will do better, so the job fails once.

`reason` is uv's own message (from its first `error:` or boxed-cross line on), laid out to follow a sentence of
ours ("... could not be built from requirements.txt: <reason>"): its headline without uv's marker ("error:", a cross),
then every further line four spaces in (uv puts `cause:` two spaces in but `hint:` at the margin; deeper lines,
such as a parse error's caret, keep their place relative to the `cause:` line), blank lines dropped. Four, so the
lines also sit under the job error in `tensorfleet status` ("  error: the project's environment ..."):

    No solution found when resolving dependencies
        cause: Because nosuchpkg was not found in the cache and you require nosuchpkg, we can conclude that ...
        hint: Packages were unavailable because the network was disabled. When the network is disabled, ...
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import uv

LineSink = Callable[[str], None]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_TRANSIENT = re.compile(
    r"error sending request|failed to fetch|failed to download|tcp connect error|connection (refused|reset|closed|"
    r"aborted)|dns error|failed to lookup address|name resolution|network is unreachable|timed out|"
    r"server error|status code 5\d\d|\b50[0-9] |\b408\b|\b429\b|too many requests|"
    r"request failed after|tls|certificate|no space left on device|broken pipe|unexpected eof",
    re.IGNORECASE,
)
_CLIENT_ERROR = re.compile(r"client error \((?!408|429)4\d\d", re.IGNORECASE)
_REASON_START = re.compile("^\\s*(error:|\u00d7 )")  # uv marks errors "error:" or with a boxed cross
_MARKER = re.compile("^\\s*(?:error:|\u00d7)\\s*")
_EXE = ".exe" if sys.platform == "win32" else ""
REASON_MAX_LINES = 40
TAIL_LINES = 200


class EnvBuildError(Exception):
    """An env could not be built; `reason` is uv's own text, `permanent` says whether retrying can help."""

    def __init__(self, reason: str, *, permanent: bool, key: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.key = key


def uv_binary() -> str:
    """The uv executable of the `uv` package installed with the agent.

    A packaged (PyInstaller) agent carries it at bin/uv inside its bundle (packaging/source_path.py,
    `project_runtime`), looked up there first: the bundle's uv runs, not one that uv's own search finds elsewhere
    (~/.local/bin). Raises FileNotFoundError (uv's UvNotFound) naming where it looked when there is none.
    """
    if getattr(sys, "frozen", False):
        bundled = Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent)) / "bin" / f"uv{_EXE}"
        if bundled.is_file():
            return str(bundled)
    return uv.find_uv_bin()


def uv_reason(lines: Sequence[str]) -> str:
    """uv's own error message: from its first error line to the end, else the last lines it printed (laid out as
    the module docstring says; at most REASON_MAX_LINES lines, the rest counted)."""
    lines = [line.rstrip() for line in lines if line.strip()]
    start = next((i for i, line in enumerate(lines) if _REASON_START.match(line)), None)
    if start is None:
        return _layout(lines[-20:]) or "uv printed nothing"
    return _layout(lines[start:])


def _layout(lines: Sequence[str]) -> str:
    if not lines:
        return ""
    head = _MARKER.sub("", lines[0], count=1).strip() or lines[0].strip()
    rest = ["    " + line[2:] if line.startswith("  ") else "    " + line.lstrip() for line in lines[1:]]
    if 1 + len(rest) > REASON_MAX_LINES:
        keep = REASON_MAX_LINES - 2
        rest = [*rest[:keep], f"    ... ({len(rest) - keep} more line(s) in the task's log)"]
    return "\n".join([head, *rest])


def _indent(reason: str) -> str:
    return "\n".join("  " + line for line in reason.splitlines())


def classify_failure(returncode: int, lines: Sequence[str]) -> EnvBuildError:
    """Turn a failed uv run into an EnvBuildError (the rule is in the module docstring)."""
    reason = uv_reason(lines)
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        return EnvBuildError(f"uv was killed by {name}; what it printed last:\n{_indent(reason)}", permanent=False)
    text = "\n".join(lines)
    transient = bool(_TRANSIENT.search(text)) and not _CLIENT_ERROR.search(text)
    return EnvBuildError(reason, permanent=not transient)


async def run_uv(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    sink: LineSink,
    timeout_s: float,
) -> None:
    """Run `uv ARGS`, each output line (stdout and stderr merged, in order) to `sink` as it comes.

    Raises EnvBuildError on a non-zero exit or past `timeout_s`; a cancelled call kills uv before it returns.
    """
    sink("$ uv " + " ".join(args))
    try:
        binary = uv_binary()
    except FileNotFoundError as exc:  # a broken install of this agent: another agent may do better
        raise EnvBuildError(
            f"this agent has no uv executable (reinstall TensorFleet on it): {exc}", permanent=False
        ) from exc
    proc = await asyncio.create_subprocess_exec(
        binary,
        *args,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        limit=1 << 20,
        start_new_session=True,  # a kill reaches uv's own children (build backends) too
    )
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    try:
        async with asyncio.timeout(timeout_s):
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip()
                if line:
                    tail.append(line)
                    sink(line)
            returncode = await proc.wait()
    except TimeoutError:
        _kill(proc)
        await proc.wait()
        last = _indent(uv_reason(list(tail)))
        raise EnvBuildError(
            f"uv ran past the build time limit of {timeout_s:.0f} s; what it printed last:\n{last}", permanent=False
        ) from None
    except BaseException:
        _kill(proc)
        with contextlib.suppress(Exception):
            await asyncio.shield(proc.wait())
        raise
    if returncode != 0:
        raise classify_failure(returncode, list(tail))


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
