#!/usr/bin/env python3
"""Ray's side of benchmarks/project_bench.py: the same project run through Ray's runtime_env (`working_dir` + `uv`
with the same local wheelhouse, offline), on a local Ray started on loopback only. Run with an interpreter that
has Ray (its own environment: Ray's pins never touch TensorFleet's).

    python ray_project_peer.py WHEELHOUSE PROJECT UV_CACHE COMMAND_JSON

It starts Ray, prints {"ready": true, "version", "ray_init_s"}, then answers one JSON line per request read from
stdin, so project_bench.py can interleave Ray's runs with TensorFleet's (both then see the same machine load):
    {"op": "run", "kind": "actor"|"task"} -> {"first_line_s", "program_start_s"}
    {"op": "quit"}

Ray takes a local working_dir only per job (ray.init(runtime_env=...), `ray job submit --working-dir`): each run
here packs and uploads the folder as those do (upload_working_dir_if_needed: hash, zip, upload when new), then
starts the project's command as a child process in the working_dir, as a Ray Jobs entrypoint does, from either
- "actor": a supervisor actor made for the run and killed after it, as `ray job submit` does (its JobSupervisor);
- "task": a plain task, for which Ray reuses an idle worker whose runtime_env matches (its fastest path).
"first_line_s" is submit -> the driver printing the program's first line (Ray forwards worker output to the
driver); "program_start_s" is submit -> the time the program stamped in that line.
"""

from __future__ import annotations

import io
import json
import os
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
    house, project, cache = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    command = json.loads(sys.argv[4])
    offline = {"UV_OFFLINE": "1", "UV_NO_INDEX": "1", "UV_FIND_LINKS": str(house), "UV_CACHE_DIR": str(cache)}
    os.environ.update(offline, UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never")
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_DEDUP_LOGS="0")  # dedup would swallow repeated first lines
    # Ray turns 127.0.0.1 into the machine's LAN address ("remotely reachable") unless told this is no cluster:
    # with this every Ray process binds and advertises loopback only, as TensorFleet's side does.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    packages = [
        line.split("#")[0].strip()
        for line in (project / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]

    import ray
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    out = sys.stdout
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

    def reply(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    reply({"ready": True, "version": ray.__version__, "ray_init_s": round(time.perf_counter() - t0, 2)})

    def entrypoint(argv: list[str]) -> int:
        import subprocess
        import sys as _sys

        argv = [_sys.executable if a == "python" else a for a in argv]
        return subprocess.run(argv, check=False).returncode  # cwd: the working_dir Ray unpacked

    task = ray.remote(num_cpus=1)(entrypoint)

    class Supervisor:
        def run(self, argv: list[str]) -> int:
            return entrypoint(argv)

    supervisor = ray.remote(num_cpus=1)(Supervisor)
    clock = LineClock()
    sys.stdout = clock  # Ray's log monitor prints the workers' lines here (our replies go to `out`)

    def run(kind: str) -> dict[str, float]:
        clock.arm()
        submitted = time.time()
        runtime_env = upload_working_dir_if_needed(  # what ray.init(runtime_env=...) / ray job submit do
            {
                "working_dir": str(project),
                "uv": {"packages": packages, "uv_pip_install_options": ["--offline", "--find-links", str(house)]},
            },
            include_gitignore=True,
            scratch_dir=ray._private.worker.global_worker.node.get_runtime_env_dir_path(),
        )
        if kind == "actor":
            actor = supervisor.options(runtime_env=runtime_env).remote()
            code = ray.get(actor.run.remote(command), timeout=600)
            ray.kill(actor)
        else:
            code = ray.get(task.options(runtime_env=runtime_env).remote(command), timeout=600)
        if code != 0:
            raise RuntimeError(f"the project's command exited with {code}")
        if not clock.seen.wait(30):
            raise RuntimeError("Ray never forwarded the program's first line to the driver")
        return {"first_line_s": clock.at - submitted, "program_start_s": clock.stamp - submitted}

    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        try:
            reply(run(str(request["kind"])))
        except Exception as exc:
            reply({"error": f"{type(exc).__name__}: {exc}"})
    sys.stdout = out
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
