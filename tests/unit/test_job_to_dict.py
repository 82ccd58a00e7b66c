"""Job.to_dict is what the store writes later: the same dict dataclasses.asdict makes, and a copy that the job's
later changes never reach (every list and dict in it is its own)."""

from __future__ import annotations

import dataclasses
from typing import Any

from tensorfleet_desktop.controller.model import ArtifactInfo, Job, JobState, JobTask, TaskRunState


def sample() -> Job:
    job = Job(
        id="j1",
        spec={"algorithm": "decision_tree", "sweep": {"params": {"max_depth": "int:1:4"}}, "tags": ["a"]},
        submitter="me",
        seq_no=3,
        state=JobState.RUNNING,
        metrics={"test_accuracy": 0.9},
        model={"name": "m", "version": 1},
        rendezvous={"host": "h", "ports": [1, 2]},
    )
    for i in range(3):
        job.tasks.append(
            JobTask(
                index=i,
                state=TaskRunState.SUCCEEDED,
                stale_attempts=["x"],
                metrics={"test_accuracy": 0.5 + i / 10},
                params={"max_depth": i, "layers": [1, 2]},
                failed_on=["n1"],
                environment={"key": "k", "files": 2},
            )
        )
        job.artifacts.append(ArtifactInfo("a" * 64, 10, "model", "model.skops", i, 0, 1.0, 1))
    return job


def test_to_dict_is_what_asdict_makes() -> None:
    job = sample()
    expected = dataclasses.asdict(job)
    expected["state"] = job.state.value
    for task in expected["tasks"]:
        task["state"] = str(task["state"])
    assert job.to_dict() == expected
    assert Job.from_dict(job.to_dict()) == job


def containers(value: Any, path: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        out.append((path, value))
        for key, item in value.items():
            out += containers(item, f"{path}.{key}")
    elif isinstance(value, list):
        out.append((path, value))
        for i, item in enumerate(value):
            out += containers(item, f"{path}[{i}]")
    return out


def test_to_dict_shares_no_list_or_dict_with_the_job() -> None:
    job = sample()
    live: set[int] = set()
    for value in [job.spec, job.metrics, job.model, job.rendezvous, job.tasks, job.artifacts]:
        live |= {id(c) for _, c in containers(value)}
    for task in job.tasks:  # every field, so a list or dict field added later is caught too
        for f in dataclasses.fields(task):
            live |= {id(c) for _, c in containers(getattr(task, f.name))}
    shared = [path for path, c in containers(job.to_dict()) if id(c) in live]
    assert not shared, shared
