"""py-spy sampling for the benchmarks: where a process's time goes, as a small JSON summary."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any


class Profiler:
    """py-spy sampling a process (and its children) for the length of a `with` block."""

    def __init__(self, out_dir: Path | None, targets: dict[str, int]) -> None:
        self.out_dir, self.targets = out_dir, targets
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Profiler:
        if self.out_dir is None:
            return self
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.targets.items():
            cmd = ["py-spy", "record", "--format", "raw", "--rate", "200", "--subprocesses", "--nonblocking"]
            cmd += ["--pid", str(pid), "--output", str(self.out_dir / f"{name}.txt")]
            self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # attached
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.send_signal(2)  # SIGINT: py-spy writes its file and exits
        for proc in self.procs:
            proc.wait(60)

    def summary(self, top: int = 12) -> dict[str, Any]:
        """Per process kind: samples, and the functions most often on the stack (inclusive share)."""
        if self.out_dir is None:
            return {}
        kinds: dict[str, dict[str, float]] = {}
        totals: dict[str, int] = {}
        for path in self.out_dir.glob("*.txt"):
            for line in path.read_text().splitlines():
                stack, _, count_text = line.rpartition(" ")
                if not stack:
                    continue
                frames = stack.split(";")
                kind = process_kind(frames[0])
                totals[kind] = totals.get(kind, 0) + int(count_text)
                seen = set()
                for frame in frames[1:]:
                    function = frame.split(" (")[0]
                    where = frame.rsplit("/", 1)[-1].split(":")[0].rstrip(")")
                    key = f"{function} ({where})"
                    if key not in seen:
                        seen.add(key)
                        kinds.setdefault(kind, {})[key] = kinds.get(kind, {}).get(key, 0) + int(count_text)
        out: dict[str, Any] = {}
        for kind, counts in kinds.items():
            ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
            out[kind] = {
                "samples": totals[kind],
                "top_inclusive_percent": {k: round(100 * v / totals[kind], 1) for k, v in ranked},
            }
        return out


def process_kind(first_frame: str) -> str:
    if "tensorfleet_agent.runtime.worker" in first_frame or "--tensorfleet-worker" in first_frame:
        return "worker"
    if "tensorfleet_agent" in first_frame:
        return "agent"
    if "tensorfleet_desktop" in first_frame or "tensorfleet serve" in first_frame:
        return "controller"
    return first_frame.split(" ")[0][:60]
