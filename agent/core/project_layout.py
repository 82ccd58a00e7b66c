"""Where a project task's pieces are, agreed by the controller, the executor, the project workload and the task
SDK that runs inside the user's own env (issue 19). Pure constants: every layer may import it.

On the agent, a project task's directory is `<data dir>/tasks/<task id>/`:

    work/                    the worker's cwd (TaskContext.task_dir); inputs/ holds the task's input blobs
    work/project/            the snapshot, materialized from the blob cache: the command's cwd
    work/project/outputs/    TENSORFLEET_OUTPUT_DIR unless the job names another: its files become artifacts
    work/project-runtime.json  written when PREPARING ends: which interpreter and PATH the command runs with
"""

from __future__ import annotations

WORKLOAD = "project"  # the workload name of a project task
WORKDIR = "project"  # under the task's work dir: the materialized snapshot, the command's cwd
RUNTIME_FILE = "project-runtime.json"  # under the task's work dir: {"workdir", "bin_dir", "python", "output_dir",
# "sdk_dir", "env_key"} (strings), written by the executor once the env is ready, read by the project workload
MANIFEST_INPUT = "project-manifest.json"  # the manifest blob's name among the task's inputs
OUTPUT_DIR_ENV = "TENSORFLEET_OUTPUT_DIR"
DEFAULT_OUTPUT_DIR = "outputs"  # relative to the working dir
OUTPUT_ARTIFACT_KIND = "output"  # the kind of an artifact collected from the output dir
SDK_MODULE = "tensorfleet_task"  # the dependency-free task SDK importable inside the user's env
