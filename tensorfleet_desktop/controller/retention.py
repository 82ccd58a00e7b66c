"""What the blob store must keep, and what it may drop (pure functions; the controller applies them).

Kept: every registered model version's file, every uploaded dataset, everything of a job that has not
succeeded (a retry or resume needs its checkpoints and shards), reports, torch configs and a project's
outputs, the model files of jobs that registered none (cross-validation folds; not a sweep's: its trials' models
that were not registered, keep_models best or none, are garbage), and the snapshot of every
project job still kept (its manifest and each file it lists: a retry, a resubmit or a re-placement sends them
again; `project_manifests` names them, the controller reads the files from each manifest). So the file of a
deleted model version, the checkpoints of a finished job, every file of a deleted job (`tensorfleet rm`: only the
jobs still kept are looked at) and a deleted dataset become garbage, and so do the unfinished files (`*.part`) a
transfer left behind when its process was killed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tensorfleet_desktop.controller.model import ArtifactInfo, Job, JobState


def referenced(jobs: Iterable[Job], datasets: Iterable[dict[str, Any]], versions: Iterable[dict[str, Any]]) -> set[str]:
    keep = {v["sha256"] for v in versions} | {d["sha256"] for d in datasets}
    for job in jobs:
        if job.spec.get("dataset", "").startswith("user:"):
            keep.add(str(job.spec["dataset"]).split(":", 1)[1])
        for artifact in job.artifacts:
            if job.state is not JobState.SUCCEEDED:
                keep.add(artifact.sha256)
            elif artifact.kind == "checkpoint":
                continue
            elif artifact.kind != "model" or (not job.model and job.mode != "sweep"):
                keep.add(artifact.sha256)
    return keep


def project_manifests(jobs: Iterable[Job]) -> set[str]:
    """The manifest ids of the project jobs kept: each manifest and every file it lists stay in the blob store."""
    out = set()
    for job in jobs:
        project = job.spec.get("project")
        if isinstance(project, dict) and isinstance(project.get("manifest_id"), str):
            out.add(project["manifest_id"])
    return out


def trim_checkpoints(artifacts: list[ArtifactInfo], keep: int) -> tuple[list[ArtifactInfo], list[ArtifactInfo]]:
    """(what stays, what goes): the `keep` latest checkpoints of each task index; other artifacts stay."""
    if keep <= 0:
        return artifacts, []
    latest: dict[int, list[ArtifactInfo]] = {}
    for a in artifacts:
        if a.kind == "checkpoint":
            latest.setdefault(a.task_index, []).append(a)
    dropped = set()
    for group in latest.values():
        for old in sorted(group, key=lambda a: a.step)[:-keep]:
            dropped.add(id(old))
    return [a for a in artifacts if id(a) not in dropped], [a for a in artifacts if id(a) in dropped]


def stale_partials(partials: dict[Path, tuple[int, float]], now: float, grace: float) -> list[Path]:
    """The unfinished files nobody has written to for `grace` seconds (and at least a minute): a transfer in
    progress writes every few milliseconds, so only a dead one leaves a file this old."""
    return [path for path, (_size, modified) in partials.items() if now - modified >= max(grace, 60.0)]
