"""The agent's side of bundled sweep trials (TaskSpec.trials, issue 21) without an agent process: the worker's trial
loop and what it tells the agent, the journal's trial tags, RunTask's checks, and the per-process dataset that every
trial of a bundle trains on."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tensorfleet_agent import task as task_api
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.types import BundledTrial, Finished, LogLine, StateChanged, TaskSpec, TaskState, TrialEnded
from tensorfleet_agent.core.validation import MAX_TRIALS_PER_TASK as MAX_TRIALS
from tensorfleet_agent.core.validation import check_trials, validate_task_spec
from tensorfleet_agent.runtime import worker
from tensorfleet_agent.runtime.channel import EventChannel
from tensorfleet_agent.runtime.journal import EVENTS_FILE, Journal, read_events
from tensorfleet_agent.workloads import datasets


class _Pipe:
    """The worker's event channel, read back as the agent would."""

    def __init__(self) -> None:
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.channel = EventChannel(write_fd)
        self._write_fd = write_fd

    def messages(self) -> list[dict[str, Any]]:
        data = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        return [json.loads(line) for line in data.decode().splitlines()]

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self._write_fd)


@pytest.fixture
def pipe() -> Iterator[_Pipe]:
    p = _Pipe()
    yield p
    p.close()


def _trials(*params: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"index": 5 + k, "params": p} for k, p in enumerate(params)]


def _loop(pipe: _Pipe, tmp_path: Path, entry: Any, trials: list[dict[str, Any]]) -> task_api.TaskContext:
    spec = {"task_id": "t", "job_id": "j", "params": {"own": True}}
    context = task_api.TaskContext(spec, tmp_path, None, pipe.channel)
    task_api._install(context)
    streams = (worker._LogStream(pipe.channel, "stdout"), worker._LogStream(pipe.channel, "stderr"))
    try:
        worker._run_trials(entry, spec, trials, context, pipe.channel, streams)
    finally:
        task_api._install(None)
    return context


def test_each_trial_is_framed_and_a_failing_one_does_not_stop_the_next(pipe: _Pipe, tmp_path: Path) -> None:
    seen: list[tuple[Any, Any]] = []

    def entry(params: dict[str, Any]) -> None:
        seen.append((params["n"], task_api.spec()["params"]["n"]))  # the trial's params, also as task.spec() says
        task_api.report(step=0, n=float(params["n"]))
        if params["n"] == 2:
            raise ValueError("no 2")

    _loop(pipe, tmp_path, entry, _trials({"n": 1}, {"n": 2}, {"n": 3}))
    assert seen == [(1, 1), (2, 2), (3, 3)]
    messages = pipe.messages()
    kinds = [(m["t"], m.get("index"), m.get("ok")) for m in messages]
    assert kinds == [
        ("trial", 5, None),
        ("metrics", None, None),
        ("trial_end", None, True),
        ("trial", 6, None),
        ("metrics", None, None),
        ("trial_end", None, False),
        ("trial", 7, None),
        ("metrics", None, None),
        ("trial_end", None, True),
    ]
    failed = messages[5]
    assert failed["error"] == "ValueError: no 2" and "raise ValueError" in failed["traceback"]
    assert all(m["seconds"] >= 0 for m in messages if m["t"] == "trial_end")


def test_each_trial_reaches_the_agent_in_one_write_with_the_next_ones_start(
    pipe: _Pipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[list[str]] = []
    write = pipe.channel._write

    def counted(data: bytes) -> None:
        writes.append([json.loads(line)["t"] for line in data.decode().splitlines()])
        write(data)

    monkeypatch.setattr(pipe.channel, "_write", counted)

    def entry(params: dict[str, Any]) -> None:
        print(f"fit {params['n']}")
        task_api.report(step=0, n=float(params["n"]))

    streams = (worker._LogStream(pipe.channel, "stdout"), worker._LogStream(pipe.channel, "stderr"))
    saved = sys.stdout
    sys.stdout = streams[0]
    try:
        _loop(pipe, tmp_path, entry, _trials({"n": 1}, {"n": 2}, {"n": 3}))
    finally:
        sys.stdout = saved
    # the first start at once; each trial's lines with the next one's start (which goes at once too); the last's at
    # the end: 4 writes for 3 trials, not 6
    assert writes == [
        ["trial"],
        ["log", "metrics", "trial_end", "trial"],
        ["log", "metrics", "trial_end", "trial"],
        ["log", "metrics", "trial_end"],
    ], writes
    assert [m["t"] for m in pipe.messages()] == [t for w in writes for t in w]


def test_a_trial_that_fills_the_disk_says_so(pipe: _Pipe, tmp_path: Path) -> None:
    def entry(params: dict[str, Any]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    _loop(pipe, tmp_path, entry, _trials({}))
    end = pipe.messages()[-1]
    assert end["t"] == "trial_end" and not end["ok"] and "(disk full on this agent:" in end["error"], end


def test_stopped_or_exit_in_a_trial_ends_the_bundle(pipe: _Pipe, tmp_path: Path) -> None:
    def stops(params: dict[str, Any]) -> None:
        if params["n"] == 2:
            raise task_api.Stopped("paused")

    with pytest.raises(task_api.Stopped):
        _loop(pipe, tmp_path, stops, _trials({"n": 1}, {"n": 2}, {"n": 3}))
    assert [(m["t"], m.get("index")) for m in pipe.messages()] == [("trial", 5), ("trial_end", None), ("trial", 6)]

    def exits(params: dict[str, Any]) -> None:
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        _loop(pipe, tmp_path, exits, _trials({"n": 1}, {"n": 2}))
    assert [m["t"] for m in pipe.messages()] == ["trial"]


def test_a_pause_between_trials_starts_no_more(pipe: _Pipe, tmp_path: Path) -> None:
    def asks_to_stop(params: dict[str, Any]) -> None:
        task_api._request_stop()  # as the worker's SIGUSR1 handler does, while trial 5 runs

    with pytest.raises(task_api.Stopped, match="before trial 6"):
        _loop(pipe, tmp_path, asks_to_stop, _trials({}, {}))
    assert [m["t"] for m in pipe.messages()] == ["trial", "trial_end"]


def test_a_partial_line_and_each_warning_belong_to_their_trial(pipe: _Pipe, tmp_path: Path) -> None:
    def entry(params: dict[str, Any]) -> None:
        warnings.warn("look out", UserWarning, stacklevel=1)  # same place every trial: shown in each
        print(f"no newline {params['n']}", end="", file=sys.stdout)

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))  # as Python's

    saved = sys.stdout, sys.stderr
    out, err = worker._LogStream(pipe.channel, "stdout"), worker._LogStream(pipe.channel, "stderr")
    sys.stdout, sys.stderr = out, err
    spec = {"task_id": "t", "params": {}}
    context = task_api.TaskContext(spec, tmp_path, None, pipe.channel)
    try:
        with warnings.catch_warnings():  # a worker's warnings as Python shows them (pytest records its own)
            warnings.simplefilter("default")  # once per place per process
            warnings.showwarning = show
            worker._run_trials(entry, spec, _trials({"n": 1}, {"n": 2}), context, pipe.channel, (out, err))
    finally:
        sys.stdout, sys.stderr = saved
    lines = [(m["t"], m.get("stream"), m.get("line", "")) for m in pipe.messages()]
    logs_by_trial: list[list[str]] = []
    for kind, stream, line in lines:
        if kind == "trial":
            logs_by_trial.append([])
        elif kind == "log":
            logs_by_trial[-1].append(f"{stream}:{line}")
    for n, logs in enumerate(logs_by_trial, start=1):
        assert f"stdout:no newline {n}" in logs, logs
        assert any(line.startswith("stderr:") and "UserWarning: look out" in line for line in logs), logs


async def test_the_journal_keeps_each_events_trial(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.start()
    journal.create("b", {})
    journal.append("b", StateChanged(TaskState.RUNNING, "worker pid 1"))
    journal.append("b", StateChanged(TaskState.RUNNING, "trial 0"), trial=0)
    journal.append("b", LogLine("stdout", "x"), trial=0)
    journal.append("b", TrialEnded(False, "ValueError: x", 0.5), trial=0)
    journal.append("b", Finished(TaskState.SUCCEEDED, "completed"))
    await asyncio.sleep(0)
    await journal.close()
    events = read_events(tmp_path / "b" / EVENTS_FILE)
    assert [(e.seq, e.trial) for e in events] == [(1, -1), (2, 0), (3, 0), (4, 0), (5, -1)]
    assert events[3].payload == TrialEnded(False, "ValueError: x", 0.5)
    again = Journal(tmp_path)
    (entry,) = again.load()
    assert entry.state is TaskState.SUCCEEDED


def _spec(workload: str = "decision_tree", **extra: Any) -> TaskSpec:
    fields: dict[str, Any] = {"dataset": "iris"} if workload == "decision_tree" else {}
    return validate_task_spec(TaskSpec("t", "j", workload, {}, **{**fields, **extra}))


def test_check_trials_fills_defaults_and_refuses_what_cannot_be_bundled() -> None:
    checked = check_trials(_spec(trials=(BundledTrial(4, {"max_depth": 2}),)))
    assert checked.trials == (BundledTrial(4, {"max_depth": 2, "min_samples_split": 2, "random_state": 42}),)
    with pytest.raises(ValidationError) as err:
        check_trials(_spec(world_size=2, partition="cv", trials=(BundledTrial(0, {}),)))
    assert err.value.field == "spec.trials" and "a cv partition" in str(err.value)
    with pytest.raises(ValidationError) as err:
        check_trials(_spec("noop", trials=tuple(BundledTrial(i, {}) for i in range(MAX_TRIALS + 1))))
    assert err.value.field == "spec.trials"
    assert len(check_trials(_spec("noop", trials=tuple(BundledTrial(i, {}) for i in range(MAX_TRIALS)))).trials) == 256
    with pytest.raises(ValidationError) as err:
        check_trials(_spec(trials=(BundledTrial(0, {}), BundledTrial(1, {"random_state": -1}))))
    assert err.value.field == "spec.trials[1].params_json.random_state"


def test_a_built_in_dataset_is_made_once_per_process_and_cannot_be_changed() -> None:
    from sklearn.datasets import load_iris

    x, y, features, classes = datasets.load("iris", {})
    x2, y2, features2, _ = datasets.load("iris", {})
    assert x2 is x and y2 is y  # the next trial's load costs nothing
    with pytest.raises(ValueError, match="read-only"):
        x[0, 0] = 99.0  # a trial that tried would change what the next trains on
    features.append("mine")
    assert features2 == datasets.load("iris", {})[2] and "mine" not in features2
    fresh = load_iris()
    assert np.array_equal(x, fresh.data) and np.array_equal(y, fresh.target) and classes == list(fresh.target_names)
    small = {"n_samples": 50, "n_features": 4, "n_informative": 2, "n_classes": 2, "random_state": 1}
    a = datasets.load("make_classification", small)
    b = datasets.load("make_classification", {**small, "random_state": 2})
    assert a[0].shape == (50, 4) and not np.array_equal(a[0], b[0])  # other parameters: other data


def test_a_users_csv_is_read_once_per_process_while_the_task_has_it(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "data.csv").write_text("a,b,label\n1,2,x\n3,4,y\n5,6,x\n")
    params = {"target": "label", "file": "data.csv", "task": "classification"}
    name = "user:" + "ab" * 32  # named by its content's sha256: the same name is the same data
    task_api._install(task_api.TaskContext({}, tmp_path, None, None))
    try:
        x, y, header, classes = datasets.load(name, params)
        assert x.tolist() == [[1, 2], [3, 4], [5, 6]] and y.tolist() == [0, 1, 0] and classes == ["x", "y"]
        assert header == ["a", "b"]
        assert datasets.load(name, params)[0] is x and not x.flags.writeable  # not parsed again
        (inputs / "data.csv").unlink()
        with pytest.raises(FileNotFoundError, match=r"data\.csv"):  # a task that was not sent it gets none
            datasets.load(name, params)
    finally:
        task_api._install(None)


def test_a_trial_that_fails_after_keeping_its_files_leads_no_later_trial(pipe: _Pipe, tmp_path: Path) -> None:
    """Under keep_models best a trial that said it would write its files and then failed (its model's dump raised)
    is no result for the controller, so a later trial that ranks behind it may be the sweep's best: it writes its
    own."""
    kept: dict[int, bool] = {}

    def entry(params: dict[str, Any]) -> None:
        index = int(task_api._current().spec["trial"])
        kept[index] = task_api.keeps_files({"m": params["m"]})
        if params.get("fail"):
            raise OSError("the model's dump failed")

    spec = {
        "task_id": "t",
        "job_id": "j",
        "params": {},
        "trial_files": {"keep": "best", "metric": "m", "maximize": True},
    }
    context = task_api.TaskContext(spec, tmp_path, None, pipe.channel)
    task_api._install(context)
    streams = (worker._LogStream(pipe.channel, "stdout"), worker._LogStream(pipe.channel, "stderr"))
    try:
        trials = _trials({"m": 0.9, "fail": True}, {"m": 0.8}, {"m": 0.7})
        worker._run_trials(entry, spec, trials, context, pipe.channel, streams)
    finally:
        task_api._install(None)
    assert kept == {5: True, 6: True, 7: False}
    ends = [m for m in pipe.messages() if m["t"] == "trial_end"]
    assert [m["ok"] for m in ends] == [False, True, True]
