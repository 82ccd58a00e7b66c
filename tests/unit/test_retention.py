"""What the blob store keeps and what it drops."""

from __future__ import annotations

from tensorfleet_desktop.controller.model import ArtifactInfo, Job, JobState
from tensorfleet_desktop.controller.retention import referenced, trim_checkpoints


def _job(job_id: str, state: JobState, model: dict[str, object] | None, *artifacts: ArtifactInfo) -> Job:
    job = Job(id=job_id, spec={"algorithm": "x", "dataset": "iris"}, submitter="me", seq_no=1, state=state)
    job.model, job.artifacts = model, list(artifacts)
    return job


def _a(sha: str, kind: str, step: int = 0, index: int = 0) -> ArtifactInfo:
    return ArtifactInfo(sha * 64, 10, kind, f"{sha}.bin", index, step)


def test_what_is_kept() -> None:
    registered = _job(
        "j1",
        JobState.SUCCEEDED,
        {"name": "m", "version": 1},
        _a("a", "model"),
        _a("b", "report"),
        _a("c", "checkpoint", 1),
    )
    folds = _job("j2", JobState.SUCCEEDED, {}, _a("d", "model"))  # cv: nothing registered, its models stay
    failed = _job("j3", JobState.FAILED, None, _a("e", "checkpoint", 2))  # a retry resumes from it
    keep = referenced([registered, folds, failed], [{"sha256": "f" * 64}], [{"sha256": "g" * 64}])
    assert keep == {x * 64 for x in "bdefg"}  # the registered model is kept by its version, not by the job


def test_trim_keeps_the_latest_checkpoints_of_each_rank() -> None:
    artifacts = [
        _a(s, "checkpoint", step, index) for s, step, index in [("a", 1, 0), ("b", 2, 0), ("c", 3, 0), ("d", 1, 1)]
    ]
    artifacts.append(_a("m", "model"))
    kept, dropped = trim_checkpoints(artifacts, 2)
    assert [a.sha256[0] for a in dropped] == ["a"]
    assert [a.sha256[0] for a in kept] == ["b", "c", "d", "m"]
    assert trim_checkpoints(artifacts, 0) == (artifacts, [])
