"""A user's project folder, snapshotted for a job (issue 19): the client side.

How it is meant to be used (by `submit --project`, the SDK and the GUI's Project tab; `AsyncClient.upload_project`
does the first four steps), in a thread:

    snap = snapshot(folder, max_bytes)              # ProjectError says what is wrong (too large, symlink escape, ...)
    missing = <controller's MissingBlobs(snap.blobs())>  # the contents it does not store yet
    plan = snap.plan_upload(set(snap.blobs()) - set(missing))  # plan.send: one entry per missing content
    for entry in plan.send: UploadBlobs snap.local_path(entry), checking entry.sha256 again
    submit(..., manifest=snap.manifest(), snapshot_id=snap.id, git=snap.git.as_dict() if snap.git else None)

The controller and the agent check a received manifest with `tensorfleet_agent.core.manifest.validate_manifest`
(or `parse_manifest` for JSON) before any path is used. Which files are sent: `walk`'s docstring.
"""

from __future__ import annotations

from tensorfleet_agent.core.manifest import ManifestEntry
from tensorfleet_desktop.project.errors import ProjectError
from tensorfleet_desktop.project.git import GitInfo, git_info
from tensorfleet_desktop.project.scan import DEFAULT_MAX_BYTES, Snapshot, UploadPlan, snapshot

__all__ = [
    "DEFAULT_MAX_BYTES",
    "GitInfo",
    "ManifestEntry",
    "ProjectError",
    "Snapshot",
    "UploadPlan",
    "git_info",
    "snapshot",
]
