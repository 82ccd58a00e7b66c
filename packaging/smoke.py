#!/usr/bin/env python3
"""Smoke-test the packaged executables (PyInstaller builds) on loopback; prints a JSON report.

    python packaging/smoke.py [--build] [--dist dist] [--out smoke-out]

1. The packaged agent: starts, advertises over mDNS on 127.0.0.1, answers GetInfo (through a controller from
   this environment that finds and pairs it) and runs a scikit-learn job and a diagnostic job in its frozen
   worker processes, and a project job (issue 19): a folder whose command imports the task SDK, with a
   requirements file its bundled uv builds an env from (offline: it names no package), its output file
   returned as an artifact. Its bundle carries a uv that runs and the task SDK's files.
2. The packaged desktop app: `tensorfleet-debug serve` (frozen controller + frozen local agent + frozen workers)
   runs a job submitted with the frozen CLI; the frozen app opens offscreen against it and saves a screenshot
   of its main window. Its bundle carries uv and the task SDK too, and the frozen CLI's `submit --project` runs
   a project job on the frozen local agent.
Exit status 0 when everything passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait(what: str, check: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with status {proc.returncode}")
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def running(cmd: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def write_parquet(path: Path) -> Path:
    """A small Parquet file (made with this environment's pyarrow) for the packaged controller to convert."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import make_blobs

    features, labels = make_blobs(n_samples=300, centers=3, n_features=4, random_state=0)
    columns = {f"f{i}": features[:, i] for i in range(features.shape[1])}
    pq.write_table(pa.table({**columns, "label": [f"c{v}" for v in labels]}), path)
    return path


def _same_file(copy: Path, original: Path) -> bool:
    return copy.is_file() and copy.read_bytes() == original.read_bytes()


def bundle_contents(folder: Path) -> dict[str, Any]:
    """What a bundle carries for project jobs: the uv executable (it runs, and is the version of this
    environment's uv package) and the task SDK (the same files as agent/task_sdk/), where the frozen agent looks."""
    import uv

    internal = folder / "_internal"  # PyInstaller's contents directory: sys._MEIPASS of the frozen program
    bundled_uv = internal / "bin" / "uv"
    expected = subprocess.run([uv.find_uv_bin(), "--version"], capture_output=True, text=True, timeout=60)
    found = (
        subprocess.run([str(bundled_uv), "--version"], capture_output=True, text=True, timeout=60)
        if bundled_uv.is_file()
        else None
    )
    sdk = sorted((HERE.parent / "agent" / "task_sdk").glob("*.py"))
    sdk_dir = internal / "tensorfleet_agent" / "task_sdk"
    sdk_same = [p.name for p in sdk if _same_file(sdk_dir / p.name, p)]
    uv_ok = found is not None and found.returncode == 0 and found.stdout.strip() == expected.stdout.strip()
    return {
        "ok": uv_ok and bool(sdk) and len(sdk_same) == len(sdk),
        "uv": found.stdout.strip() if found is not None else f"missing: {bundled_uv}",
        "uv_expected": expected.stdout.strip(),
        "task_sdk": sdk_same,
        "task_sdk_expected": [p.name for p in sdk],
    }


TRAIN = """\
import sys

import tensorfleet_task as task

out = task.output_dir()
out.mkdir(parents=True, exist_ok=True)
(out / "result.txt").write_text(f"ran on Python {sys.version.split()[0]} at {sys.executable}\\n")
task.report(1, answer=42.0)
print("smoke project ran with", sys.executable)
"""


def write_project(folder: Path) -> Path:
    """A project folder: a command that imports the task SDK, and a requirements file naming no package (its env
    is built by the bundled uv offline)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(TRAIN)
    (folder / "requirements.txt").write_text("# no third-party packages: the env is an interpreter and the task SDK\n")
    return folder


def project_job(client: Any, work: Path) -> dict[str, Any]:
    """A project job on the packaged agent: env built with the bundled uv, the SDK imported, the output returned."""
    job = client.submit_project(write_project(work / "project"), ["python", "train.py"], env="auto")
    final = client.wait(job["id"], timeout=300)
    outputs = [a["name"] for a in client.artifacts(job["id"]) if a["kind"] == "output"]
    tasks = final.get("task_list") or [{}]
    environment = tasks[0].get("environment") or {}
    ok = (
        final["state"] == "SUCCEEDED"
        and final["metrics"].get("answer") == 42.0
        and "result.txt" in outputs
        and bool(environment.get("key"))
    )
    return {
        "ok": ok,
        "state": final["state"],
        "error": final["error"],
        "metrics": final["metrics"],
        "outputs": outputs,
        "environment": environment,
        "upload": job.get("upload"),
    }


def smoke_agent(dist: Path, work: Path, env: dict[str, str]) -> dict[str, Any]:
    from tensorfleet_desktop.client import Client

    contents = bundle_contents(dist / "tensorfleet-agent")
    exe = dist / "tensorfleet-agent" / "tensorfleet-agent"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True, timeout=60)
    ready = work / "agent.ready"
    ready.unlink(missing_ok=True)
    agent_cmd = [str(exe), "--host", LOOPBACK, "--port", "0", "--name", "frozen-agent", "--interfaces", LOOPBACK]
    agent_cmd += ["--data-dir", str(work / "agent"), "--cpu-slots", "1", "--ready-file", str(ready)]
    port = free_port()
    serve = [sys.executable, "-m", "tensorfleet_desktop", "serve", "--host", LOOPBACK, "--port", str(port)]
    serve_ready = work / "controller.ready"
    serve_ready.unlink(missing_ok=True)
    serve += ["--data-dir", str(work / "controller"), "--interfaces", LOOPBACK, "--no-local-agent"]
    serve += ["--ready-file", str(serve_ready)]
    started = time.monotonic()
    # no package index: a project's env comes from what the agent has (uv's offline mode, its own cache dir)
    agent_env = {**env, "UV_OFFLINE": "1", "UV_CACHE_DIR": str(work / "uv-cache")}
    with running(agent_cmd, work / "agent.log", agent_env) as agent:
        wait("the packaged agent to be ready", ready.exists, 60, agent)
        agent_ready_s = time.monotonic() - started
        with running(serve, work / "controller.log", env) as controller:
            # the client reads the controller's token from its connection file, written before the ready file
            wait("the controller to be ready", serve_ready.exists, 60, controller)
            with Client(f"{LOOPBACK}:{port}") as client:

                def found() -> bool:
                    try:
                        return any(a["name"] == "frozen-agent" and a["state"] == "ONLINE" for a in client.agents())
                    except Exception:  # the controller is still starting
                        return False

                wait("the controller to find the agent over mDNS and pair", found, 60, controller)
                info = next(a for a in client.agents() if a["name"] == "frozen-agent")
                results = {}
                for spec in (
                    {"algorithm": "random_forest", "dataset": "iris", "hyperparameters": {"n_estimators": 20}},
                    {"algorithm": "noop"},
                ):
                    job = client.submit(spec)
                    final = client.wait(job["id"], timeout=300)
                    results[spec["algorithm"]] = {
                        "state": final["state"],
                        "metrics": final["metrics"],
                        "error": final["error"],
                    }
                project = project_job(client, work)
    ok = all(r["state"] == "SUCCEEDED" for r in results.values()) and info["paired"]
    ok = ok and contents["ok"] and project["ok"]
    return {
        "ok": ok,
        "bundle": contents,
        "project_job": project,
        "version": version.stdout.strip(),
        "start_to_ready_s": round(agent_ready_s, 2),
        "found_over_mdns": True,
        "paired": info["paired"],
        "workloads": info["workloads"],
        "jobs": results,
    }


def smoke_desktop(dist: Path, work: Path, out: Path, env: dict[str, str]) -> dict[str, Any]:
    contents = bundle_contents(dist / "tensorfleet")
    exe = dist / "tensorfleet" / "tensorfleet-debug"
    port = free_port()
    address = f"{LOOPBACK}:{port}"
    ready = work / "desktop-serve.ready"
    ready.unlink(missing_ok=True)
    serve = [str(exe), "serve", "--host", LOOPBACK, "--port", str(port), "--data-dir", str(work / "desktop")]
    serve += ["--interfaces", LOOPBACK, "--no-mdns", "--ready-file", str(ready), "--local-agent-slots", "1"]
    shot = out / "desktop-main-window.png"
    started = time.monotonic()
    # the local agent inherits this: project envs offline, in the smoke's own uv cache
    serve_env = {**env, "UV_OFFLINE": "1", "UV_CACHE_DIR": str(work / "uv-cache")}
    with running(serve, work / "desktop-serve.log", serve_env) as controller:
        wait("the packaged controller", ready.exists, 90, controller)
        serve_ready_s = time.monotonic() - started
        cli = [str(exe), "--controller", address]
        parquet = write_parquet(work / "blobs.parquet")
        upload = subprocess.run(
            [*cli, "datasets", "upload", str(parquet), "--name", "blobs", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        submit = subprocess.run(
            [*cli, "submit", "-a", "logistic_regression", "-d", "blobs", "--target", "label", "--wait", "--json"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        job = json.loads(submit.stdout) if submit.returncode == 0 else {"error": submit.stderr[-2000:]}
        project_dir = write_project(work / "desktop-project")
        project_submit = subprocess.run(
            [*cli, "submit", "--project", str(project_dir), "--wait", "--json", "--", "python", "train.py"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        try:  # a failed job still prints its JSON (exit code JOB_FAILED); a refusal prints only an error
            project = json.loads(project_submit.stdout)
        except ValueError:
            project = {"error": (project_submit.stdout + project_submit.stderr)[-2000:]}
        gui = subprocess.run(
            [str(exe), "--controller", address, "gui", "--no-start", "--screenshot", str(shot)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, "QT_QPA_PLATFORM": "offscreen"},
        )
        subprocess.run([str(exe), "--controller", address, "shutdown"], capture_output=True, timeout=60, env=env)
        with contextlib.suppress(subprocess.TimeoutExpired):
            controller.wait(60)
    ok = submit.returncode == 0 and gui.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000
    ok = ok and project.get("state") == "SUCCEEDED" and (project.get("metrics") or {}).get("answer") == 42.0
    return {
        "ok": ok and upload.returncode == 0 and contents["ok"],
        "bundle": contents,
        "serve_ready_s": round(serve_ready_s, 2),
        "parquet_upload": json.loads(upload.stdout) if upload.returncode == 0 else upload.stderr[-1500:],
        "job": {k: job.get(k) for k in ("state", "metrics", "error")},
        "project_job": {k: project.get(k) for k in ("state", "metrics", "error", "environment", "upload")},
        "gui_exit": gui.returncode,
        "gui_stderr_tail": gui.stderr[-1500:] if gui.returncode else "",
        "screenshot": str(shot),
        "screenshot_bytes": shot.stat().st_size if shot.exists() else 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--build", action="store_true", help="build the agent and the desktop app first")
    parser.add_argument("--dist", type=Path, default=HERE.parent / "dist")
    parser.add_argument("--out", type=Path, default=HERE.parent / "smoke-out")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    if args.build:
        built = subprocess.run(
            [sys.executable, str(HERE / "build.py"), "agent", "desktop", "--dist", str(args.dist)],
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            print(built.stdout[-3000:], built.stderr[-3000:], file=sys.stderr)
            return 1
        report.update(json.loads(built.stdout[built.stdout.index("{") :]))
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    work.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "TENSORFLEET_MDNS_INTERFACES": LOOPBACK,
        "TENSORFLEET_CLUSTER_TOKEN": f"tfsmoke-{secrets.token_urlsafe(12)}",
        "XDG_CONFIG_HOME": str(work / "xdg"),
    }
    os.environ.update({k: env[k] for k in ("TENSORFLEET_MDNS_INTERFACES", "TENSORFLEET_CLUSTER_TOKEN")})
    for name, fn in (
        ("agent", lambda: smoke_agent(args.dist, work, env)),
        ("desktop", lambda: smoke_desktop(args.dist, work, args.out, env)),
    ):
        try:
            report[name] = fn()
        except Exception as exc:  # report every failure, then fail
            report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(report, indent=2))
    return 0 if all(report[k]["ok"] for k in ("agent", "desktop")) else 1


if __name__ == "__main__":
    sys.exit(main())
