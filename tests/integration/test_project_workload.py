"""The `project` workload run the way the executor runs it: a real worker process (runtime/process.WorkerProcess),
a runtime file as PREPARING writes it (here by hand, with the agent's own venv as the env) and a small project.

What a user relies on: the command runs in the project with the env's Python and torchrun's variables; the task
SDK's metrics, progress, artifacts, checkpoints and model registrations arrive as task events; the exit code, a
signal or a missing program is the task's error in words; a pause reaches the command (also one asked before it
imported the SDK) and ends the task as stopped; a cancel leaves no process of it behind; a program that never
imports the SDK runs as well and its output streams.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from tensorfleet_agent.core import project_layout
from tensorfleet_agent.core.digest import blob_relpath
from tensorfleet_agent.runtime.process import WorkerProcess, worker_environment
from tensorfleet_agent.runtime.project_prepare import sdk_dir

BIN_DIR = str(Path(sys.executable).parent)  # the agent's venv stands in for a built env (it has pyvenv.cfg)
ENTRY = "tensorfleet_agent.workloads.project:run"
MANIFEST = "ab" * 32


@dataclass
class Run:
    """What one task did: the worker's messages (with arrival times) and its output lines."""

    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    lines: list[tuple[float, str, str]] = field(default_factory=list)
    started_at: float = 0.0

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m.get("t") == kind]

    @property
    def done(self) -> dict[str, Any]:
        found = self.of("done")
        assert found, f"no done message; output: {self.text()}"
        return found[-1]

    def text(self, stream: str = "") -> str:
        out = [line for _, s, line in self.lines if not stream or s == stream]
        out += [str(m["line"]) for m in self.of("log") if not stream or m.get("stream") == stream]
        return "\n".join(out)


class Task:
    """One project task: its dirs, its runtime file, its worker."""

    def __init__(self, root: Path, files: dict[str, str]) -> None:
        self.root = root
        self.task_dir = root / "tasks" / "t1" / "work"
        self.workdir = self.task_dir / project_layout.WORKDIR
        self.blobs = root / "blobs"
        self.output_dir = self.workdir / project_layout.DEFAULT_OUTPUT_DIR
        self.workdir.mkdir(parents=True)
        (self.task_dir / "inputs").mkdir()
        self.blobs.mkdir()
        for name, text in files.items():
            path = self.workdir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        runtime = {
            "workdir": str(self.workdir),
            "bin_dir": BIN_DIR,
            "python": sys.executable,
            "output_dir": str(self.output_dir),
            "sdk_dir": str(sdk_dir()),
            "env_key": "",
        }
        (self.task_dir / project_layout.RUNTIME_FILE).write_text(json.dumps(runtime))
        self.worker: WorkerProcess | None = None
        self.run = Run()

    async def start(self, command: list[str], **spec: Any) -> WorkerProcess:
        env = worker_environment(dict(os.environ), {"CUDA_VISIBLE_DEVICES": ""})
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("VIRTUAL_ENV", None)
        self.worker = await WorkerProcess.spawn(env, str(self.root))
        self.worker.on_output = lambda stream, line: self.run.lines.append((time.monotonic(), stream, line))
        body = {
            "task_id": "t1",
            "job_id": "job1",
            "workload": project_layout.WORKLOAD,
            "params": {"manifest": MANIFEST, "command": command, "env": "none", "output_dir": "outputs"},
            "rank": 0,
            "world_size": 1,
            "attempt": 1,
            **spec,
        }
        self.run.started_at = time.monotonic()
        self.worker.send(
            {"op": "run", "entry": ENTRY, "spec": body, "task_dir": str(self.task_dir), "blobs_dir": str(self.blobs)}
        )
        return self.worker

    async def until(self, kind: str, timeout: float = 30.0) -> dict[str, Any]:
        """Read the worker's messages until one of `kind` (kept in self.run)."""
        assert self.worker is not None
        deadline = time.monotonic() + timeout
        while True:
            found = self.run.of(kind)
            if found:
                return found[-1]
            left = deadline - time.monotonic()
            assert left > 0, f"no {kind!r} message in {timeout}s; output: {self.run.text()}"
            for message in await self.worker.next_messages(timeout=left):
                self.run.messages.append((time.monotonic(), message))

    async def finish(self, timeout: float = 30.0) -> Run:
        await self.until("done", timeout)
        await self.close()
        return self.run

    async def close(self) -> None:
        if self.worker is not None:
            await self.worker.close()

    def blob(self, sha: str) -> bytes:
        return (self.blobs / blob_relpath(sha)).read_bytes()


@pytest.fixture
async def make_task(tmp_path: Path) -> Any:
    made: list[Task] = []

    def make(files: dict[str, str] | None = None) -> Task:
        task = Task(tmp_path / f"t{len(made)}", files or {})
        made.append(task)
        return task

    yield make
    for task in made:
        if task.worker is not None and task.worker.alive:
            task.worker.kill()
        if task.worker is not None:
            await task.worker.wait()


TRAIN = """
    import os, sys
    import tensorfleet_task as task
    from mypkg.model import weights

    print("training", flush=True)
    for step in range(3):
        task.report(step, loss=1.0 / (step + 1), accuracy=0.5 + step / 10)
    task.progress(0.5)
    with open("ckpt.bin", "wb") as fh:
        fh.write(b"checkpoint-1")
    task.save_checkpoint("ckpt.bin", step=2)
    with open("ckpt.bin", "wb") as fh:  # overwritten at once: the stored checkpoint is the first one
        fh.write(b"checkpoint-2-is-longer")
    out = task.output_dir()
    (out / "model.skops").write_bytes(weights())
    task.register_model(out / "model.skops", name="tiny-model")
    (out / "notes.txt").write_text("hi")
    print("artifact", task.save_artifact(out / "notes.txt", kind="notes", name="notes.txt"))
    try:
        task.register_model(out / "notes.txt", format="pickle")
    except ValueError as exc:
        print("refused:", exc)
    task.progress(1.0)
    print("done", file=sys.stderr)
"""


async def test_the_sdk_calls_of_a_project_arrive_as_task_events(make_task: Any) -> None:
    task = make_task(
        {
            "train.py": TRAIN,
            "mypkg/__init__.py": "",
            "mypkg/model.py": "def weights():\n    return b'weights'\n",
        }
    )
    await task.start(["python", "train.py"])
    run = await task.finish()

    assert {k: v for k, v in run.done.items() if k != "alone"} == {"t": "done", "ok": True}, run.text()
    assert "training" in run.text("stdout") and "done" in run.text("stderr")
    points = [(m["step"], m["values"]) for m in run.of("metrics")]
    assert points == [(s, {"loss": 1.0 / (s + 1), "accuracy": 0.5 + s / 10}) for s in range(3)]
    assert all(isinstance(m["wall_time"], float) for m in run.of("metrics"))
    assert [m["fraction"] for m in run.of("progress")] == [0.5, 1.0]

    (checkpoint,) = run.of("checkpoint")
    assert (checkpoint["step"], checkpoint["name"], checkpoint["size"]) == (2, "ckpt.bin", len(b"checkpoint-1"))
    assert task.blob(checkpoint["sha256"]) == b"checkpoint-1"  # stored before the call returned

    artifacts = {m["kind"]: m for m in run.of("artifact")}
    assert set(artifacts) == {"model", "report", "notes"}
    assert artifacts["model"]["name"] == "model.skops" and task.blob(artifacts["model"]["sha256"]) == b"weights"
    report = json.loads(task.blob(artifacts["report"]["sha256"]))
    assert report["model_name"] == "tiny-model" and report["format"] == "skops"
    assert report["model_file"] == "model.skops" and report["sha256"] == artifacts["model"]["sha256"]
    assert report["versions"]["python"] == sys.version.split()[0]
    assert f"artifact {artifacts['notes']['sha256']}" in run.text("stdout")  # save_artifact returns the sha256
    assert "refused: refusing to register notes.txt: a pickle model runs arbitrary code" in run.text()


async def test_a_failing_command_fails_the_task_with_its_exit_code_in_words(make_task: Any) -> None:
    task = make_task({"fail.py": "import sys\nprint('about to fail', flush=True)\nsys.exit(3)\n"})
    await task.start(["python", "fail.py", "--lr", "3e-4"])
    run = await task.finish()
    assert run.done["ok"] is False
    assert run.done["error"] == "command `python fail.py --lr 3e-4` exited with code 3"
    assert run.done["traceback"] == "" and run.done["cause"] == "exit_code"
    assert "about to fail" in run.text("stdout")


async def test_a_command_killed_by_a_signal_says_which(make_task: Any) -> None:
    task = make_task({"die.py": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"})
    await task.start(["python", "die.py"])
    run = await task.finish()
    assert run.done["error"] == "command `python die.py` was killed by SIGKILL"
    assert run.done["cause"] == "signal"


async def test_a_program_that_cannot_start_is_a_permanent_failure_naming_the_envs_bin_dir(make_task: Any) -> None:
    """A typo or a script without its x bit: no retry would mend it (exit cause bad_command: the controller fails
    the job at once), and the error names where it looked, not the agent's whole PATH."""
    task = make_task({})
    await task.start(["pyhton", "main.py"])
    run = await task.finish()
    assert run.done["ok"] is False and run.done["cause"] == "bad_command"
    assert run.done["error"] == (
        f"command not found: pyhton (not in the env's bin dir {BIN_DIR} nor on the agent's PATH); did you mean python?"
    )
    task = make_task({"run.sh": "echo hi\n"})  # in the project but not executable
    await task.start(["./run.sh"])
    run = await task.finish()
    assert run.done["error"].startswith("command not executable: ./run.sh (mode 644")
    assert run.done["cause"] == "bad_command"
    task = make_task({})
    await task.start(["./train.sh"])
    run = await task.finish()
    assert run.done["error"] == f"command not found: ./train.sh (no such file in the project ({task.workdir}))"
    assert run.done["cause"] == "bad_command"


async def test_a_program_without_the_sdk_runs_and_its_output_streams(make_task: Any) -> None:
    """Also the runner's overhead: the first output line arrives soon after the worker is told to run."""
    task = make_task({"plain.py": "import sys, time\nprint('first', flush=True)\ntime.sleep(0.3)\nprint('last')\n"})
    await task.start(["python", "plain.py"])
    first = await wait_line(task, "first")
    assert not task.run.of("done")  # streamed while it runs, not at the end
    run = await task.finish()
    assert run.done["ok"] is True and "last" in run.text("stdout")
    latency = first - run.started_at
    print(f"run command -> first log line: {latency * 1000:.0f} ms")
    assert latency < 5.0


async def wait_line(task: Task, text: str, timeout: float = 30.0) -> float:
    """When a line holding `text` arrived on the worker's stdout/stderr (the child's output)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for at, _stream, line in task.run.lines:
            if text in line:
                return at
        assert task.worker is not None
        for message in await task.worker.next_messages(timeout=0.05):
            task.run.messages.append((time.monotonic(), message))
    raise AssertionError(f"no line with {text!r} in {timeout}s; output: {task.run.text()}")


ENV_KEYS = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
    "CUDA_VISIBLE_DEVICES", "PATH", "PYTHONPATH", "VIRTUAL_ENV", "TENSORFLEET_TASK_ID", "TENSORFLEET_JOB_ID",
    "TENSORFLEET_TASK_DIR", "TENSORFLEET_OUTPUT_DIR", "TENSORFLEET_PROJECT_DIR", "TENSORFLEET_INPUTS_DIR",
    "TENSORFLEET_RESUME_CHECKPOINT", "OMP_NUM_THREADS",
)  # fmt: skip
SHOW_ENV = f"""
    import json, os, sys
    print("ENV " + json.dumps({{k: os.environ.get(k) for k in {ENV_KEYS!r}}} | {{"python": sys.executable,
          "cwd": os.getcwd(), "prefix": sys.prefix}}))
"""


async def test_the_command_gets_the_env_python_torchruns_variables_and_the_tensorfleet_ones(make_task: Any) -> None:
    task = make_task({"show.py": SHOW_ENV})
    (task.task_dir / "inputs" / "resume.ckpt").write_bytes(b"state")
    rdv = {"master_addr": "10.0.0.7", "master_port": 29511}
    await task.start(
        ["python", "show.py"],
        rank=3,
        world_size=4,
        local_rank=1,
        local_world_size=2,
        group_rank=1,
        group_world_size=2,
        rendezvous=rdv,
    )
    run = await task.finish()
    assert run.done["ok"] is True, run.text()
    line = next(line for line in run.text("stdout").splitlines() if line.startswith("ENV "))
    env = json.loads(line[4:])
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")} == {
        "RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1",
    }  # fmt: skip
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env["CUDA_VISIBLE_DEVICES"]) == ("10.0.0.7", "29511", "")
    assert env["PATH"].split(os.pathsep)[0] == BIN_DIR and env["VIRTUAL_ENV"] == str(Path(BIN_DIR).parent)
    assert env["python"] == str(Path(BIN_DIR) / "python") and env["prefix"] == str(Path(BIN_DIR).parent)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(sdk_dir())
    assert env["cwd"] == str(task.workdir) == env["TENSORFLEET_PROJECT_DIR"]
    assert (env["TENSORFLEET_TASK_ID"], env["TENSORFLEET_JOB_ID"]) == ("t1", "job1")
    assert env["TENSORFLEET_TASK_DIR"] == str(task.task_dir)
    assert env["TENSORFLEET_INPUTS_DIR"] == str(task.task_dir / "inputs")
    assert env["TENSORFLEET_RESUME_CHECKPOINT"] == str(task.task_dir / "inputs" / "resume.ckpt")
    assert env["TENSORFLEET_OUTPUT_DIR"] == str(task.output_dir) and task.output_dir.is_dir()
    assert env["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS")  # the worker's thread caps, inherited


async def test_one_rank_alone_gets_a_free_loopback_port_and_no_resume_checkpoint(make_task: Any) -> None:
    task = make_task({"show.py": SHOW_ENV})
    await task.start(["python", "show.py"])
    run = await task.finish()
    env = json.loads(next(x for x in run.text("stdout").splitlines() if x.startswith("ENV "))[4:])
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"]) == ("0", "1", "1")
    assert env["MASTER_ADDR"] == "127.0.0.1" and int(env["MASTER_PORT"]) > 0
    assert env["TENSORFLEET_RESUME_CHECKPOINT"] is None


LOOP = """
    import time
    print("launched", flush=True)
    time.sleep(float(__import__("sys").argv[1]))  # before the SDK is imported: a pause now must not be lost
    import tensorfleet_task as task
    step = 0
    print("looping", flush=True)
    while not task.stop_requested():
        time.sleep(0.01)
        step += 1
    with open("ckpt.bin", "wb") as fh:
        fh.write(b"state")
    task.save_checkpoint("ckpt.bin", step=step)
    raise task.Stopped(f"paused at step {step}")
"""


@pytest.mark.parametrize("import_delay", [0.0, 1.0])
async def test_a_pause_reaches_the_command_and_ends_the_task_as_stopped(make_task: Any, import_delay: float) -> None:
    task = make_task({"loop.py": LOOP})
    worker = await task.start(["python", "loop.py", str(import_delay)])
    if import_delay:
        await wait_line(task, "launched")
        await asyncio.sleep(0.3)  # the command runs, SIGUSR1 ignored, the SDK not imported yet
    else:
        await wait_line(task, "looping")
    worker.signal_worker(signal.SIGUSR1)  # what the executor does on a pause
    run = await task.finish()
    assert run.done["ok"] is False and run.done.get("stopped") is True, run.text()
    assert run.done["error"].startswith("paused at step ")
    assert len(run.of("checkpoint")) == 1
    assert "Traceback" not in run.text()


async def test_stop_from_the_code_itself_ends_the_task_as_stopped(make_task: Any) -> None:
    task = make_task({"s.py": "import tensorfleet_task as task\ntask.stop('nothing left to do today')\n"})
    await task.start(["python", "s.py"])
    run = await task.finish()
    done = {k: v for k, v in run.done.items() if k != "alone"}  # `alone`: whether the agent may skip its cleanup scan
    assert done == {"t": "done", "ok": False, "stopped": True, "error": "nothing left to do today"}


SPAWNER = """
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("PIDS", os.getpid(), child.pid, flush=True)
    time.sleep(600)
"""


async def pids_of(task: Task) -> list[int]:
    at = await wait_line(task, "PIDS")
    line = next(line for t, _, line in task.run.lines if t == at and "PIDS" in line)
    return [int(p) for p in line.split()[1:]]


def gone(pids: list[int], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
            return True
        time.sleep(0.05)
    return False


async def test_a_cancel_kills_the_command_and_its_children(make_task: Any) -> None:
    task = make_task({"spawner.py": SPAWNER})
    worker = await task.start(["python", "spawner.py"])
    pids = await pids_of(task)
    assert all(psutil.pid_exists(p) for p in pids)
    await worker.terminate(1.0)  # the executor's cancel: SIGTERM to the worker's group, SIGKILL after the grace
    assert gone(pids), f"left running: {pids}"


async def test_the_command_dies_with_its_worker(make_task: Any) -> None:
    """Only the worker killed (not its group): PDEATHSIG takes the command along."""
    task = make_task({"spawner.py": SPAWNER})
    worker = await task.start(["python", "spawner.py"])
    command_pid, grandchild = await pids_of(task)
    worker.signal_worker(signal.SIGKILL)
    assert gone([command_pid]), "the command outlived its worker"
    os.kill(grandchild, signal.SIGKILL)  # beyond PDEATHSIG's reach: the executor's group kill takes these


RAW = """
    import json, os, socket
    import tensorfleet_task as task
    raw = socket.socket(socket.AF_UNIX)
    raw.connect(os.environ["TENSORFLEET_SDK_SOCKET"])
    raw.sendall(b"not json\\n" + b'{"t": "metrics", "step": -1, "values": {"x": 1}}\\n' + b'[1, 2]\\n')
    raw.sendall(b'{"t": "metrics", "step": 1, "values": {"x": NaN}}\\n{"t": "warp"}\\n')
    raw.sendall(b"[" * 100000 + b"\\n")
    raw.sendall(b"x" * (2 << 20) + b'\\n{"t": "metrics", "step": 4, "values": {"x": 1.5}}\\n')  # too long, skipped
    raw.close()
    task.report(5, x=2.0)
    reply = task._connection().request({"t": "artifact_file", "path": "missing.bin", "kind": "k"})
    print("REPLY", json.dumps(reply))
    reply = task._connection().request({"t": "register_model", "path": "m.pkl", "format": "pickle"})
    print("REPLY", json.dumps(reply))
"""


async def test_malformed_sdk_messages_are_logged_and_refused_requests_answered(make_task: Any) -> None:
    task = make_task({"raw.py": RAW, "m.pkl": "x"})
    await task.start(["python", "raw.py"])
    run = await task.finish()
    assert run.done["ok"] is True, run.text()
    assert sorted(m["step"] for m in run.of("metrics")) == [4, 5]  # two connections: no order between them
    stderr = run.text("stderr")
    assert stderr.count("ignored a malformed message from the task SDK") == 6
    assert stderr.count("ignored an SDK message of over 1024 KiB") == 1
    for why in ("not JSON", "step must be a non-negative integer", "not an object", "is NaN", "unknown type"):
        assert why in stderr
    replies = [json.loads(x[6:]) for x in run.text("stdout").splitlines() if x.startswith("REPLY ")]
    assert replies[0]["ok"] is False and replies[0]["type"] == "FileNotFoundError"
    assert replies[0]["error"] == f"no such file: {task.workdir / 'missing.bin'}"
    assert replies[1]["ok"] is False and "allow_pickle=True" in replies[1]["error"]
    assert not run.of("artifact")


async def test_a_shell_wrapper_works_and_a_stop_reaches_the_python_it_runs(make_task: Any) -> None:
    """`bash run.sh` starting python: bash ignores SIGUSR1, the SDK's process says hello and gets it."""
    task = make_task({"run.sh": "#!/bin/bash\necho wrapper\npython loop.py 0\n", "loop.py": LOOP})
    (task.workdir / "run.sh").chmod(0o755)
    worker = await task.start(["./run.sh"])
    await wait_line(task, "looping")
    worker.signal_worker(signal.SIGUSR1)
    run = await task.finish()
    assert "wrapper" in run.text("stdout")
    # bash exits 1 after the python's Stopped: the stopped message decides
    assert run.done.get("stopped") is True and run.done["error"].startswith("paused at step "), run.text()


MULTI = """
    import multiprocessing as mp, subprocess, sys
    import tensorfleet_task as task

    def save(i):
        for n in range(40):
            name = f"c{i}-{n}.bin"
            with open(name, "wb") as fh:
                fh.write(name.encode())
            task.save_artifact(name, kind="part")

    def spawned():
        task.report(3, spawned=1.0)

    if __name__ == "__main__":
        children = [mp.get_context("fork").Process(target=save, args=(i,)) for i in range(3)]
        for child in children:
            child.start()
        for child in children:
            child.join()
            assert child.exitcode == 0, child.exitcode
        subprocess.run([sys.executable, "-c", "import tensorfleet_task as t; t.report(2, loss=1)"], check=True)
        child = mp.get_context("spawn").Process(target=spawned)
        child.start()
        child.join()
        assert child.exitcode == 0, child.exitcode
        print("all done", flush=True)
"""


async def test_the_sdk_works_from_every_process_of_the_command(make_task: Any) -> None:
    """Forked children storing files at once (each call returns once its own file is stored), a subprocess and a
    spawned child reporting metrics: nothing lost, no hang (review finding 2)."""
    task = make_task({"multi.py": MULTI})
    await task.start(["python", "multi.py"])
    run = await task.finish(timeout=60)
    assert run.done["ok"] is True, run.text()
    parts = {m["name"]: m for m in run.of("artifact") if m["kind"] == "part"}
    assert sorted(parts) == sorted(f"c{i}-{n}.bin" for i in range(3) for n in range(40))
    assert all(task.blob(m["sha256"]) == name.encode() for name, m in parts.items())
    assert sorted((m["step"], m["values"]) for m in run.of("metrics")) == [(2, {"loss": 1.0}), (3, {"spawned": 1.0})]
    assert not list(task.task_dir.glob("*.sock")), "the socket is removed when the command ends"


RANKS = """
    import os
    import tensorfleet_task as task

    rank = int(os.environ["RANK"])
    with open(f"rank{rank}.txt", "w") as fh:
        fh.write(str(rank))
    task.save_artifact(f"rank{rank}.txt", kind="rank")
    task.report(1, **{f"rank{rank}": float(rank)})
"""


async def test_a_launcher_inside_the_command_reports_from_each_of_its_ranks(make_task: Any) -> None:
    """torchrun (or accelerate launch) started by the command itself: its worker processes use the SDK too."""
    pytest.importorskip("torch.distributed.run")
    task = make_task({"ranks.py": RANKS})
    await task.start(["python", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "ranks.py"])
    run = await task.finish(timeout=60)
    assert run.done["ok"] is True, run.text()
    assert sorted(m["name"] for m in run.of("artifact") if m["kind"] == "rank") == ["rank0.txt", "rank1.txt"]
    assert sorted(name for m in run.of("metrics") for name in m["values"]) == ["rank0", "rank1"]


CHILDREN_LOOP = """
    import multiprocessing as mp, sys, time
    import tensorfleet_task as task

    def work(i):
        while not task.stop_requested():  # its first call connects (a forked child) and says hello
            print(f"child {i} looping", flush=True)
            time.sleep(0.05)
        print(f"child {i} stopped", flush=True)

    if __name__ == "__main__":
        children = [mp.get_context(sys.argv[1]).Process(target=work, args=(i,)) for i in range(2)]
        for child in children:
            child.start()
        for child in children:
            child.join(30)
        raise task.Stopped("children stopped: " + " ".join(str(c.exitcode) for c in children))
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
async def test_a_pause_reaches_the_commands_children_that_use_the_sdk(make_task: Any, method: str) -> None:
    task = make_task({"loop.py": CHILDREN_LOOP})
    worker = await task.start(["python", "loop.py", method])
    await wait_line(task, "child 0 looping")
    await wait_line(task, "child 1 looping")
    worker.signal_worker(signal.SIGUSR1)
    run = await task.finish()
    assert run.done.get("stopped") is True and run.done["error"] == "children stopped: 0 0", run.text()
    assert "child 0 stopped" in run.text() and "child 1 stopped" in run.text()


def test_the_sdk_socket_path_fits_a_unix_socket_and_only_its_user_may_connect(tmp_path: Path) -> None:
    from tensorfleet_agent.workloads.project_socket import MAX_SOCKET_PATH, SdkServer

    short = tmp_path / "s"
    short.mkdir()
    long = tmp_path / ("d" * 120)
    long.mkdir()
    for task_dir in (short, long):
        server = SdkServer(task_dir, lambda line: None, print)
        try:
            path = Path(server.path)
            assert len(os.fsencode(server.path)) <= MAX_SOCKET_PATH and path.is_socket()
            assert path.parent == task_dir if task_dir is short else path.parent.stat().st_mode & 0o777 == 0o700
            assert path.stat().st_mode & 0o777 == 0o600
        finally:
            server.close()
        assert not path.exists() and (task_dir is short or not path.parent.exists())


def test_describe_quotes_the_command_as_typed() -> None:
    from tensorfleet_agent.workloads.project_env import describe

    assert describe(["python", "-m", "pkg.train", "--name", "a b"]) == shlex.join(
        ["python", "-m", "pkg.train", "--name", "a b"]
    )
    assert describe(["x" * 300]).endswith("...") and len(describe(["x" * 300])) == 200


def test_the_runner_words_its_failures_with_the_agents_exit_causes() -> None:
    from tensorfleet_agent.core.types import ExitCause
    from tensorfleet_agent.workloads import project_env

    assert (project_env.EXIT_CODE, project_env.SIGNAL, project_env.SETUP, project_env.BAD_COMMAND) == (
        ExitCause.EXIT_CODE, ExitCause.SIGNAL, ExitCause.SETUP, ExitCause.BAD_COMMAND,
    )  # fmt: skip


def test_a_packaged_agents_library_path_does_not_reach_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyInstaller's bootloader sets LD_LIBRARY_PATH to its bundle (the original kept as LD_LIBRARY_PATH_ORIG):
    the user's python and tools must load their own libraries."""
    from tensorfleet_agent.workloads.project_env import child_environment

    runtime = {"workdir": str(tmp_path), "bin_dir": BIN_DIR, "sdk_dir": str(sdk_dir())}
    base = {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/bundle/_internal", "LD_LIBRARY_PATH_ORIG": "/usr/local/lib"}
    spec = {"task_id": "t", "job_id": "j"}
    assert child_environment(spec, runtime, tmp_path, tmp_path, base)["LD_LIBRARY_PATH"] == "/opt/bundle/_internal"
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    env = child_environment(spec, runtime, tmp_path, tmp_path, base)
    assert env["LD_LIBRARY_PATH"] == "/usr/local/lib" and "LD_LIBRARY_PATH_ORIG" not in env
    base.pop("LD_LIBRARY_PATH_ORIG")
    assert "LD_LIBRARY_PATH" not in child_environment(spec, runtime, tmp_path, tmp_path, base)
