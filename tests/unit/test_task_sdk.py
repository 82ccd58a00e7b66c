"""The dependency-free task SDK (agent/task_sdk/tensorfleet_task.py) that a project's own code imports.

Outside TensorFleet every call works (messages to stderr, paths from the current dir); inside, it speaks the
runner's JSON lines (workloads/project_socket.py, project_relay.py): these tests play the runner's side of the
socket. It must import on Python 3.9 with nothing but the standard library, in whatever env the user's project has.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SDK = Path(__file__).resolve().parents[2] / "agent" / "task_sdk" / "tensorfleet_task.py"
SDK_VARIABLES = ("TENSORFLEET_SDK_SOCKET",)


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    """A fresh import of the SDK outside TensorFleet, in tmp_path."""
    for name in (
        *SDK_VARIABLES,
        "TENSORFLEET_OUTPUT_DIR",
        "TENSORFLEET_INPUTS_DIR",
        "TENSORFLEET_RESUME_CHECKPOINT",
        "TENSORFLEET_DATASET_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("tensorfleet_task_under_test", SDK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_outside_tensorfleet_every_call_works_and_prints_to_stderr(
    sdk: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sdk.report(3, loss=0.25, acc=1)
    sdk.progress(1.5)
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"weights")
    sha = hashlib.sha256(b"weights").hexdigest()
    assert sdk.save_artifact(model, kind="model") == sha
    assert sdk.save_checkpoint(str(model), step=4, name="ck") == sha
    assert sdk.register_model(model, name="m1") == sha
    lines = [json.loads(x.removeprefix("[tensorfleet] ")) for x in capsys.readouterr().err.splitlines()]
    assert [m["t"] for m in lines] == ["metrics", "progress", "artifact_file", "checkpoint_file", "register_model"]
    assert lines[0]["values"] == {"loss": 0.25, "acc": 1.0} and lines[1]["fraction"] == 1.0
    assert lines[3]["step"] == 4 and lines[3]["name"] == "ck" and lines[2]["path"] == str(model)
    assert lines[4]["format"] == "safetensors" and lines[4]["name"] == "m1"

    assert sdk.output_dir() == tmp_path / "outputs" and (tmp_path / "outputs").is_dir()
    assert sdk.inputs_dir() == tmp_path and sdk.resume_checkpoint() is None
    assert sdk.dataset_dir() is None  # no dataset named
    monkeypatch.setenv("TENSORFLEET_DATASET_DIR", str(tmp_path / "ds"))
    assert sdk.dataset_dir() == tmp_path / "ds"
    assert (sdk.rank(), sdk.local_rank(), sdk.world_size()) == (0, 0, 1)
    assert not sdk.stop_requested()
    with pytest.raises(FileNotFoundError, match=r"input 'train\.csv' was not sent"):
        sdk.input_path("train.csv")

    monkeypatch.setenv("TENSORFLEET_RESUME_CHECKPOINT", str(model))
    monkeypatch.setenv("TENSORFLEET_OUTPUT_DIR", str(tmp_path / "out2"))
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert sdk.resume_checkpoint() == model and sdk.output_dir() == tmp_path / "out2"
    assert (sdk.rank(), sdk.world_size()) == (2, 4)


def test_bad_arguments_get_clear_errors(sdk: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metric 'loss' is NaN at step 2"):
        sdk.report(2, loss=float("nan"))
    with pytest.raises(ValueError, match="step must be a non-negative integer, got -1"):
        sdk.report(-1, loss=1.0)
    with pytest.raises(ValueError, match="step must be a non-negative integer, got True"):
        sdk.report(True, loss=1.0)
    with pytest.raises(TypeError, match="metric 'loss' must be a number, got str"):
        sdk.report(1, loss="low")
    with pytest.raises(FileNotFoundError, match=r"save_artifact: no such file: .*nope\.bin"):
        sdk.save_artifact("nope.bin")
    with pytest.raises(ValueError, match="is not a regular file"):
        sdk.save_checkpoint(tmp_path, step=1)
    with pytest.raises(ValueError, match="step must be a non-negative integer"):
        sdk.save_checkpoint(tmp_path, step=-3)
    weights = tmp_path / "model.pkl"
    weights.write_bytes(b"pickle")
    with pytest.raises(ValueError, match=r"a pickle model runs arbitrary code .* allow_pickle=True"):
        sdk.register_model(weights)
    sdk.register_model(weights, allow_pickle=True)
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"cannot tell the model format of model\.bin from its suffix"):
        sdk.register_model(other)
    with pytest.raises(ValueError, match=r"unknown model format 'h5' \(known: skops, safetensors, onnx, pickle\)"):
        sdk.register_model(other, format="h5")
    with pytest.raises(ValueError, match="a pickle model"):
        sdk.register_model(other, format="pickle")
    with pytest.raises(ValueError, match="model name may only hold"):
        sdk.register_model(other, format="onnx", name="my model")
    with pytest.raises(ValueError, match="kind must be"):
        sdk.save_artifact(other, kind="a/b")
    with pytest.raises(ValueError, match="name must be a file name"):
        sdk.save_artifact(other, name="dir/x")
    with pytest.raises(ValueError, match="progress fraction is NaN"):
        sdk.progress(float("nan"))


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.skops", "skops"), ("a.SAFETENSORS", "safetensors"), ("a.onnx", "onnx"), ("a.pkl", "pickle"),
     ("a.pickle", "pickle"), ("a.joblib", "pickle")],
)  # fmt: skip
def test_the_model_format_comes_from_the_suffix(sdk: ModuleType, name: str, fmt: str) -> None:
    assert sdk.model_format(name) == fmt


def test_numpy_scalars_are_numbers(sdk: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    np = pytest.importorskip("numpy")
    sdk.report(1, loss=np.float32(0.5), n=np.int64(3))
    assert json.loads(capsys.readouterr().err.removeprefix("[tensorfleet] "))["values"] == {"loss": 0.5, "n": 3.0}


# ---- inside a task: the test plays the runner


CHILD = """
    import os, signal, sys, time
    import tensorfleet_task as task

    task.report(1, loss=0.5)
    task.progress(0.25)
    open("f.bin", "wb").write(b"data")
    print("artifact", task.save_artifact("f.bin", kind="notes"))
    print("checkpoint", task.save_checkpoint("f.bin", step=7))
    open("m.onnx", "wb").write(b"onnx")
    print("model", task.register_model("m.onnx", name="net"))
    try:
        task.save_artifact("f.bin", kind="refuse")
    except FileNotFoundError as exc:
        print("refused", exc)
    os.kill(os.getpid(), signal.SIGUSR1)
    while not task.stop_requested():
        time.sleep(0.01)
    raise task.Stopped("paused at step 7")
"""


class FakeRunner:
    """The runner's side of the SDK's socket: records every message, answers every request on its connection."""

    def __init__(self, folder: Path) -> None:
        self.path = str(folder / "sdk.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def env(self) -> dict[str, str]:
        return {"TENSORFLEET_SDK_SOCKET": self.path}

    def run(self, script: str, cwd: Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        (cwd / "child.py").write_text(textwrap.dedent(script))
        env = {k: v for k, v in os.environ.items() if k not in SDK_VARIABLES}
        env.update(self.env() | (extra or {}) | {"PYTHONPATH": str(SDK.parent)})
        try:
            return subprocess.run(
                [sys.executable, "child.py"], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
            )
        finally:
            self.listener.close()
            for thread in list(self.threads):
                thread.join(10)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                message = json.loads(line)
                with self.lock:
                    self.messages.append(message)
                if "id" in message:
                    if message.get("kind") == "refuse":
                        reply = {"ok": False, "type": "FileNotFoundError", "error": "no such file: f.bin (runner)"}
                    else:
                        reply = {"ok": True, "sha256": "f" * 64, "size": 4}
                    conn.sendall((json.dumps({"t": "reply", "id": message["id"], **reply}) + "\n").encode())


def test_inside_a_task_the_sdk_speaks_the_runners_messages(tmp_path: Path) -> None:
    runner = FakeRunner(tmp_path)
    done = runner.run(CHILD, tmp_path)
    assert done.returncode == 1, done.stderr  # an uncaught Stopped: the "stopped" message decides, not the code
    assert "tensorfleet: stopped: paused at step 7" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout.splitlines() == [
        f"artifact {'f' * 64}",  # the runner's sha256 (what it stored)
        f"checkpoint {'f' * 64}",
        f"model {'f' * 64}",
        "refused no such file: f.bin (runner)",
    ]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for message in runner.messages:
        by_type.setdefault(message["t"], []).append(message)
    assert runner.messages[0]["t"] == "hello"  # first: a pause asked before it is forwarded again
    assert by_type["hello"] == [{"t": "hello", "pid": by_type["hello"][0]["pid"], "protocol": 2, "signals": True}]
    (metrics,) = by_type["metrics"]
    assert metrics["step"] == 1 and metrics["values"] == {"loss": 0.5} and isinstance(metrics["wall_time"], float)
    assert by_type["progress"] == [{"t": "progress", "fraction": 0.25}]
    first, refused = by_type["artifact_file"]
    assert first == {
        "t": "artifact_file", "path": str(tmp_path / "f.bin"), "kind": "notes", "name": "f.bin", "id": first["id"]
    }  # fmt: skip
    assert refused["kind"] == "refuse"
    (checkpoint,) = by_type["checkpoint_file"]
    assert (checkpoint["path"], checkpoint["step"], checkpoint["name"]) == (str(tmp_path / "f.bin"), 7, "f.bin")
    (model,) = by_type["register_model"]
    assert {k: model[k] for k in ("path", "name", "format", "allow_pickle")} == {
        "path": str(tmp_path / "m.onnx"), "name": "net", "format": "onnx", "allow_pickle": False
    }  # fmt: skip
    assert model["versions"]["python"] == sys.version.split()[0]
    assert by_type["stopped"] == [{"t": "stopped", "reason": "paused at step 7"}]
    assert len({m["id"] for ms in by_type.values() for m in ms if "id" in m}) == 4  # one id per request


def test_a_runner_that_cannot_be_reached_is_said_and_nothing_is_lost_silently(tmp_path: Path) -> None:
    """The socket variable came along but no runner listens (a process that outlived its task): metrics go to
    stderr, a file request fails loudly rather than seem stored."""
    runner = FakeRunner(tmp_path)
    script = """
        import tensorfleet_task as task
        task.report(1, x=1.0)
        open("f.bin", "wb").write(b"x")
        try:
            task.save_artifact("f.bin")
        except RuntimeError as exc:
            print("refused:", exc)
    """
    done = runner.run(script, tmp_path, {"TENSORFLEET_SDK_SOCKET": str(tmp_path / "nobody.sock")})
    assert done.returncode == 0, done.stderr
    assert runner.messages == []
    assert done.stderr.count("cannot reach the TensorFleet agent at") == 1
    assert '[tensorfleet] {"t": "metrics"' in done.stderr
    assert "refused: artifact_file: the TensorFleet agent cannot be reached at" in done.stdout


MANY = """
    import multiprocessing as mp, os, subprocess, sys
    import tensorfleet_task as task

    def save(i):
        for n in range(40):
            name = f"c{i}-{n}.bin"
            open(name, "wb").write(name.encode())
            assert task.save_artifact(name) == "f" * 64

    def spawned():
        task.report(3, spawned=1.0)

    if __name__ == "__main__":
        task.report(1, parent=1.0)
        children = [mp.get_context("fork").Process(target=save, args=(i,)) for i in range(3)]
        for child in children:
            child.start()
        save(9)  # the parent too, on its own connection, at the same time
        for child in children:
            child.join(60)
            assert child.exitcode == 0, child.exitcode
        subprocess.run([sys.executable, "-c", "import tensorfleet_task as t; t.report(2, sub=1.0)"], check=True)
        child = mp.get_context("spawn").Process(target=spawned)
        child.start()
        child.join(60)
        assert child.exitcode == 0
        print("all done")
"""


def test_every_process_of_a_task_reports_on_its_own_connection(tmp_path: Path) -> None:
    """Forked children saving files at once, a subprocess and a spawned child: every message arrives, every
    request is answered to the process that asked (no hang)."""
    runner = FakeRunner(tmp_path)
    done = runner.run(MANY, tmp_path)
    assert done.returncode == 0 and "all done" in done.stdout, done.stderr
    saved = [m["name"] for m in runner.messages if m["t"] == "artifact_file"]
    assert sorted(saved) == sorted(f"c{i}-{n}.bin" for i in (0, 1, 2, 9) for n in range(40))
    assert len({m["id"] for m in runner.messages if "id" in m}) == 160  # one id per request, across processes
    metrics = {name for m in runner.messages if m["t"] == "metrics" for name in m["values"]}
    assert metrics == {"parent", "sub", "spawned"}
    hellos = [m for m in runner.messages if m["t"] == "hello"]
    assert len({m["pid"] for m in hellos}) == len(hellos) == 6  # parent, 3 forked, subprocess, spawned
    assert all(m["signals"] for m in hellos)  # each has the SDK's SIGUSR1 handler (forked: inherited)


def test_a_pause_signal_outside_a_task_keeps_its_default_meaning(sdk: ModuleType) -> None:
    """Imported by hand, the SDK takes no signal: a script run outside TensorFleet behaves as it always did."""
    assert signal.getsignal(signal.SIGUSR1) is not sdk._on_sigusr1
    assert sys.excepthook is not sdk._excepthook


# ---- it must run in any user env: Python 3.9, standard library only


def test_the_sdk_is_python_39_syntax_and_standard_library_only() -> None:
    source = SDK.read_text()
    tree = ast.parse(source, feature_version=(3, 9))
    assert any(
        isinstance(node, ast.ImportFrom) and node.module == "__future__" and node.names[0].name == "annotations"
        for node in tree.body
    ), "annotations must stay unevaluated (X | None in them is 3.10+ at runtime)"
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
        # 3.10+ at runtime, which feature_version does not catch: X | Y outside annotations, zip(strict=)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            assert not isinstance(node.args[1], ast.BinOp), f"isinstance with X | Y at line {node.lineno}"
        if isinstance(node, ast.Call):
            assert not any(k.arg == "strict" for k in node.keywords), f"strict= at line {node.lineno}"
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)
