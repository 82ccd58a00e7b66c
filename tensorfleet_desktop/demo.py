"""`tensorfleet demo`: a throw-away cluster on this machine (a controller and two agents found over
mDNS on loopback) running the seed's demo jobs, with a table of results at the end."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from tensorfleet_desktop.client import TERMINAL, AsyncClient
from tensorfleet_desktop.controller.app import ControllerApp, ControllerConfig
from tensorfleet_desktop.local_cluster import LOOPBACK, DemoCluster, demo_agent_command, start_demo_cluster

DEMO_JOBS: list[dict[str, Any]] = [
    {"name": "iris-random-forest", "algorithm": "random_forest", "dataset": "iris", "model_name": "iris-rf"},
    {
        "name": "wine-logistic-regression",
        "algorithm": "logistic_regression",
        "dataset": "wine",
        "model_name": "wine-logreg",
    },
    {"name": "iris-svm", "algorithm": "svm", "dataset": "iris", "model_name": "iris-svm"},
    {
        "name": "breast-cancer-decision-tree",
        "algorithm": "decision_tree",
        "dataset": "breast_cancer",
        "model_name": "breast-cancer-tree",
    },
    {
        "name": "wine-svm-sweep",
        "algorithm": "svm",
        "dataset": "wine",
        "sweep": {"params": {"C": "float:0.01:100:log", "kernel": "linear,rbf"}, "search": "tpe", "trials": 6},
    },
]
#: Shown when PyTorch is installed: two ranks on the two agents, meeting over torch.distributed.
TORCH_JOB: dict[str, Any] = {
    "name": "digits-mlp-2-ranks",
    "algorithm": "torch_mlp",
    "dataset": "digits",
    "num_workers": 2,
    "hyperparameters": {"epochs": 3},
}


def demo_specs() -> list[dict[str, Any]]:
    """The demo's jobs on this machine: the seed jobs, plus the 2-rank torch job when PyTorch is installed."""
    return [dict(spec) for spec in DEMO_JOBS] + ([dict(TORCH_JOB)] if importlib.util.find_spec("torch") else [])


async def submit_demo_jobs(client: AsyncClient) -> list[dict[str, Any]]:
    """Submit the demo jobs (the CLI demo, `gui --demo` and the app's welcome pane); returns the new jobs."""
    return [await client.submit(spec) for spec in demo_specs()]


def run_gui_demo(data_dir: Path | None = None, port: int | None = None, screenshot: Path | None = None) -> int:
    """The demo in the desktop app: a persistent demo cluster (started detached, or the one already running)
    runs the demo jobs, and the window opens on it. Closing the window leaves the cluster running; the app's
    Quit and stop ends it. Returns the window's exit code (the CLI's on a start failure)."""
    from tensorfleet_desktop.cli import exit_codes
    from tensorfleet_desktop.local_cluster import StartFailed

    console = Console(stderr=True, highlight=False)
    try:
        cluster = asyncio.run(_start_gui_demo(data_dir, port, console))
    except StartFailed as exc:
        console.print(f"tensorfleet demo: {exc}", markup=False, soft_wrap=True)
        return exit_codes.JOB_FAILED
    console.print(
        f"The demo cluster runs on after the window closes: stop it with the app's Quit and stop, or "
        f"`tensorfleet --controller {cluster.address} shutdown`",
        markup=False,
        soft_wrap=True,
    )
    return _open_window(cluster, screenshot)


def _open_window(cluster: DemoCluster, screenshot: Path | None) -> int:
    """The desktop app on the demo cluster; it never starts a controller (the demo started one)."""
    from tensorfleet_desktop.ui.app import run as run_window

    return run_window(cluster.address, cluster.controller_dir, autostart=False, screenshot=screenshot, on_jobs=True)


async def _start_gui_demo(data_dir: Path | None, port: int | None, console: Console) -> DemoCluster:
    cluster = await start_demo_cluster(data_dir, port)
    console.print(f"[bold]TensorFleet demo[/bold]: {cluster.describe()}", soft_wrap=True)
    names = {spec["name"] for spec in demo_specs()}
    async with AsyncClient(cluster.address) as client:
        going = [j for j in await client.jobs() if j["name"] in names and j["state"] not in TERMINAL]
        if going:  # launched again while the last launch's jobs still run: those are the demo
            console.print(f"{len(going)} demo jobs of an earlier launch are still going; not submitting again")
        else:
            jobs = await submit_demo_jobs(client)
            console.print(f"submitted {len(jobs)} demo jobs; the window opens on them")
    return cluster


def run_demo(data_dir: Path | None, as_json: bool) -> bool:
    """Whether every demo job succeeded (the command's exit code says it)."""
    if data_dir is not None:
        return asyncio.run(_demo(data_dir, as_json))
    with tempfile.TemporaryDirectory(prefix="tensorfleet-demo-") as tmp:
        return asyncio.run(_demo(Path(tmp), as_json))


def _start_agent(data_dir: Path, name: str, cluster_token: str) -> tuple[subprocess.Popen[bytes], Path]:
    ready = data_dir / f"{name}.ready"
    log = (data_dir / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        demo_agent_command(data_dir, name, os.getpid(), ready),
        env={**os.environ, "TENSORFLEET_CLUSTER_TOKEN": cluster_token},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    return proc, ready


async def _demo(data_dir: Path, as_json: bool) -> bool:
    console = Console(stderr=True, highlight=False)
    started = time.monotonic()
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    console.print(
        f"[bold]TensorFleet demo[/bold]: a controller and 2 agents on this machine "
        f"(mDNS on {LOOPBACK} only), data in {data_dir}"
    )
    # A fresh cluster token: the agents pair with this controller for real, over TLS, and with no other.
    cluster_token = f"tfdemo-{secrets.token_urlsafe(16)}"
    agents = [_start_agent(data_dir, f"demo-agent-{i + 1}", cluster_token) for i in range(2)]
    app = ControllerApp(
        ControllerConfig(
            data_dir=data_dir / "controller",
            port=0,
            interfaces=[LOOPBACK],
            local_agent=False,
            cluster_token=cluster_token,
        )
    )
    try:
        await app.start()
        async with AsyncClient(f"{LOOPBACK}:{app.port}") as client:
            await _wait_for_agents(client, 2, agents, console)
            if not importlib.util.find_spec("torch"):
                console.print("PyTorch is not installed: the 2-rank torch job is left out")
            jobs = await submit_demo_jobs(client)
            final = await _follow(client, [j["id"] for j in jobs], console)
    finally:
        await app.stop()
        for proc, _ in agents:
            proc.terminate()
        for proc, _ in agents:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
    elapsed = time.monotonic() - started
    ok = all(j["state"] == "SUCCEEDED" for j in final)
    if as_json:
        sys.stdout.write(json.dumps({"jobs": [_row(j) for j in final], "seconds": round(elapsed, 1)}, indent=2) + "\n")
    else:
        table = Table(
            "JOB",
            "ALGORITHM",
            "DATASET",
            "STATE",
            "TEST ACCURACY",
            "AGENT",
            "REGISTERED AS",
            "MODEL (sha256)",
            title=f"TensorFleet demo: {len(final)} jobs in {elapsed:.1f}s",
        )
        for j in final:
            r = _row(j)
            acc = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-"
            table.add_row(
                r["name"],
                r["algorithm"],
                r["dataset"],
                r["state"],
                acc,
                r["agent"],
                f"{r['model']['name']}:{r['model']['version']}" if r["model"] else "-",
                (r["model_sha256"] or "-")[:16],
            )
        Console(highlight=False, width=max(140, Console().width)).print(table)
    return ok


def _row(job: dict[str, Any]) -> dict[str, Any]:
    # the job's model: a merged forest (-1), a sweep's best trial, else the (rank 0) task's
    wanted = int(job["metrics"].get("best_trial", 0))
    models = [a for a in job["artifacts"] if a["kind"] == "model"]
    model = next((a for a in models if a["task_index"] in (-1, wanted)), models[0] if models else None)
    return {
        "id": job["id"],
        "name": job["name"],
        "algorithm": job["algorithm"],
        "dataset": job["dataset"],
        "state": job["state"],
        "test_accuracy": job["metrics"].get("test_accuracy"),
        "agent": ", ".join(sorted({t["agent"] for t in job["task_list"]})),
        "model": job["model"],
        "model_sha256": model["sha256"] if model else None,
        "error": job["error"],
    }


async def _wait_for_agents(
    client: AsyncClient, count: int, agents: list[tuple[subprocess.Popen[bytes], Path]], console: Console
) -> None:
    deadline = time.monotonic() + 60
    while True:
        online = [a for a in await client.agents() if a["state"] == "ONLINE"]
        if len(online) >= count:
            console.print(f"found {len(online)} agents over mDNS: {', '.join(a['name'] for a in online)}")
            return
        for proc, _ in agents:
            if proc.poll() is not None:
                raise RuntimeError(f"a demo agent exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(online)} of {count} agents came online in 60 s")
        await asyncio.sleep(0.1)


async def _follow(client: AsyncClient, ids: list[str], console: Console) -> list[dict[str, Any]]:
    """One bar per job, in submission order, moved by the SDK's stream of job changes until every job ended."""
    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TextColumn("{task.fields[state]:<10}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        latest: dict[str, dict[str, Any]] = {}
        rows: dict[str, TaskID] = {}
        async for change in client.watch_jobs(ids):
            latest |= {job["id"]: job for job in change["jobs"]}
            for job_id in ids:
                job = latest.get(job_id)
                if job is None:
                    continue
                if job_id not in rows:
                    rows[job_id] = bar.add_task(job["name"], total=1.0, state=job["state"])
                bar.update(rows[job_id], completed=job["progress"], state=job["state"])
            if len(latest) == len(ids) and all(job["state"] in TERMINAL for job in latest.values()):
                return [latest[job_id] for job_id in ids]
    raise RuntimeError("the controller ended its stream of job changes before the demo jobs ended")
