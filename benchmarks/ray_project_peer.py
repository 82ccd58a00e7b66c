#!/usr/bin/env python3
"""Ray's side of benchmarks/project_bench.py: the same project run through Ray's runtime_env (`working_dir` + `uv`
with the same local wheelhouse, offline), on a local Ray started on loopback only. Run with an interpreter that
has Ray (its own environment: Ray's pins never touch TensorFleet's). Prints one JSON document.

    RAY_PYTHON=/path/to/ray-venv/bin/python python benchmarks/project_bench.py

Ray takes a local working_dir only per job (ray.init(runtime_env=...), `ray job submit --working-dir`): each run
here packs and uploads the folder as those do (upload_working_dir_if_needed: hash, zip, upload when new), then
runs a Ray task with that runtime_env that starts the project's command as a child process in
the working_dir, as a Ray Jobs entrypoint does. Two kinds of submission are timed:
- "task": a plain task; Ray reuses an idle worker whose runtime_env matches (its fastest path);
- "fresh_worker": max_calls=1, a new worker process per run, as `ray job submit` gets (a new supervisor actor).
"first_line_s" is submit -> the driver printing the program's first line (Ray forwards worker output to the
driver); "program_start_s" is submit -> the time the program stamped in that line.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

MARK = "trainer start"


class LineClock(io.TextIOBase):
    """Stands in for the driver's stdout: notes when a line with MARK arrives, and the time stamped in it."""

    def __init__(self) -> None:
        self.seen = threading.Event()
        self.at = 0.0
        self.stamp = 0.0

    def arm(self) -> None:
        self.seen.clear()

    def write(self, text: str) -> int:
        if not self.seen.is_set() and MARK in text:
            self.at = time.time()
            try:
                self.stamp = float(text.split(MARK, 1)[1].split()[0])
            except (IndexError, ValueError):
                self.stamp = 0.0
            self.seen.set()
        return len(text)


def main() -> int:
    house, project, cache, repeat = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    command = json.loads(sys.argv[5])
    offline = {"UV_OFFLINE": "1", "UV_NO_INDEX": "1", "UV_FIND_LINKS": str(house), "UV_CACHE_DIR": str(cache)}
    os.environ.update(offline, UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never")
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_DEDUP_LOGS="0")  # dedup would swallow repeated first lines
    packages = [
        line.split("#")[0].strip()
        for line in (project / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]

    import ray
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    t0 = time.perf_counter()
    for attempt in (1, 2):  # Ray gives its raylet a fixed 30 s to register: a busy machine can miss that once
        try:
            ray.init(
                address="local",
                include_dashboard=False,
                num_cpus=2,
                _node_ip_address="127.0.0.1",
                log_to_driver=True,
                configure_logging=False,
            )
            break
        except Exception as exc:
            if attempt == 2 or "timed out during startup" not in str(exc):
                raise
            ray.shutdown()
    started_s = time.perf_counter() - t0

    def entrypoint(argv: list[str]) -> int:
        import subprocess
        import sys as _sys

        argv = [_sys.executable if a == "python" else a for a in argv]
        return subprocess.run(argv, check=False).returncode  # cwd: the working_dir Ray unpacked

    reused = ray.remote(num_cpus=1)(entrypoint)
    fresh_worker = ray.remote(num_cpus=1, max_calls=1)(entrypoint)

    clock = LineClock()
    real_stdout = sys.stdout

    def run(fresh: bool) -> dict[str, float]:
        remote = fresh_worker if fresh else reused
        clock.arm()
        sys.stdout = clock
        try:
            submitted = time.time()
            runtime_env = upload_working_dir_if_needed(  # what ray.init(runtime_env=...) / ray job submit do
                {
                    "working_dir": str(project),
                    "uv": {"packages": packages, "uv_pip_install_options": ["--offline", "--find-links", str(house)]},
                },
                include_gitignore=True,
                scratch_dir=ray._private.worker.global_worker.node.get_runtime_env_dir_path(),
            )
            code = ray.get(remote.options(runtime_env=runtime_env).remote(command), timeout=600)
            assert code == 0, f"the project's command exited with {code}"
            if not clock.seen.wait(30):
                raise RuntimeError("Ray never forwarded the program's first line to the driver")
        finally:
            sys.stdout = real_stdout
        return {"first_line_s": clock.at - submitted, "program_start_s": clock.stamp - submitted}

    def change(n: int) -> None:
        model = project / "trainer" / "model.py"
        model.write_text(model.read_text() + f"\nCHANGE = {n}\n")

    report: dict[str, Any] = {"version": ray.__version__, "ray_init_s": round(started_s, 2)}
    for kind, fresh in (("fresh_worker", True), ("task", False)):
        cold = run(fresh) if kind == "fresh_worker" else None  # one cold run: the env is built once
        warm = [run(fresh) for _ in range(repeat)]
        changed = []
        for i in range(repeat):
            change(i + (100 if fresh else 0))
            changed.append(run(fresh))
        report[kind] = {
            **({"cold": _round(cold)} if cold else {}),
            "warm": _median(warm),
            "one_line_change": _median(changed),
        }
    ray.shutdown()
    print(json.dumps(report))
    return 0


def _round(run: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in run.items()}


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}


if __name__ == "__main__":
    sys.exit(main())
