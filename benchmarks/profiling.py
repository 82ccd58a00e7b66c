"""py-spy sampling for the benchmarks: where a process's time goes, as a small JSON summary; and the CPU time of a
process tree by role (tree_cpu)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil


class Profiler:
    """py-spy (PY_SPY, default `py-spy` on PATH) sampling each process (and its children) for the length of a
    `with` block: collapsed stacks in OUT_DIR/NAME.txt."""

    def __init__(self, out_dir: Path | None, targets: dict[str, int]) -> None:
        self.out_dir, self.targets = out_dir, targets
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Profiler:
        if self.out_dir is None:
            return self
        self.out_dir.mkdir(parents=True, exist_ok=True)
        spy = os.environ.get("PY_SPY", "py-spy")
        for name, pid in self.targets.items():
            cmd = [spy, "record", "--format", "raw", "--rate", "200", "--subprocesses", "--nonblocking"]
            cmd += ["--pid", str(pid), "--output", str(self.out_dir / f"{name}.txt")]
            self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # attached
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.send_signal(2)  # SIGINT: py-spy writes its file and exits
        for proc in self.procs:
            proc.wait(60)

    def summary(self, top: int = 10) -> dict[str, Any]:
        """Per process kind (controller, agent, worker): samples, the functions most often on the stack
        below the entry chain (inclusive share), and for workers the packages their imports spent time in."""
        if self.out_dir is None:
            return {}
        totals: dict[str, int] = {}
        inclusive: dict[str, dict[str, int]] = {}
        imports: dict[str, dict[str, int]] = {}
        for path in self.out_dir.glob("*.txt"):
            for line in path.read_text().splitlines():
                stack, _, count_text = line.rpartition(" ")
                frames = stack.split(";")
                processes = [f for f in frames if f.startswith("process ")]
                if not processes:
                    continue
                kind, count = process_kind(processes[-1]), int(count_text)
                totals[kind] = totals.get(kind, 0) + count
                seen: set[str] = set()
                for frame in frames:
                    if frame.startswith("process ") or _ENTRY.search(frame):
                        continue
                    key = _short(frame)
                    if key not in seen:
                        seen.add(key)
                        bucket = inclusive.setdefault(kind, {})
                        bucket[key] = bucket.get(key, 0) + count
                package = next((m.group(1) for f in frames if (m := _IMPORTED.search(f))), None)
                if package is not None:
                    bucket = imports.setdefault(kind, {})
                    bucket[package] = bucket.get(package, 0) + count
        out: dict[str, Any] = {}
        for kind, total in totals.items():
            ranked = sorted(inclusive.get(kind, {}).items(), key=lambda kv: -kv[1])[:top]
            entry: dict[str, Any] = {
                "samples": total,
                "top_inclusive_percent": {k: round(100 * v / total, 1) for k, v in ranked},
            }
            if kind in imports:
                ranked_imports = sorted(imports[kind].items(), key=lambda kv: -kv[1])[:top]
                entry["importing_percent"] = {k: round(100 * v / total, 1) for k, v in ranked_imports}
            out[kind] = entry
        return out


_ENTRY = re.compile(
    r"frozen runpy|frozen importlib|asyncio/(base_events|events|runners)\.py|threading\.py|__main__\.py"
    r"|^(main|run|serve) \(tensorfleet_desktop/cli/\w+\.py"
)
_IMPORTED = re.compile(r"^<module> \(.*?site-packages/([A-Za-z0-9_]+)")


def _short(frame: str) -> str:
    """'fn (path/to/file.py:12)' -> 'fn (file.py)'."""
    function, _, where = frame.partition(" (")
    return f"{function} ({where.rsplit('/', 1)[-1].split(':')[0].rstrip(')')})"


def process_kind(first_frame: str) -> str:
    if "tensorfleet_agent.runtime.worker" in first_frame or "--tensorfleet-worker" in first_frame:
        return "worker"
    if "tensorfleet_agent" in first_frame:
        return "agent"
    if "tensorfleet_desktop" in first_frame or "tensorfleet serve" in first_frame:
        return "controller"
    return first_frame.split(" ")[0][:60]


def tree_cpu(pid: int) -> dict[str, float]:
    """User+system CPU seconds of a process and of its descendants, by role: the process itself, and all below it
    (a fork server's exited workers counted through its reaped children's times); NaN once the process is gone."""
    try:
        root = psutil.Process(pid)
        own = root.cpu_times()
        below = own.children_user + own.children_system
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # gone meanwhile: its parent's children_* has it next time
                t = child.cpu_times()
                below += t.user + t.system + t.children_user + t.children_system
        return {"self": own.user + own.system, "children": below}
    except psutil.Error:
        return {"self": float("nan"), "children": float("nan")}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 3) for k in before}
