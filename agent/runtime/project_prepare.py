"""A project task's PREPARING step and its output collection, run by the executor in the agent process (issue 19).

    prepared = await prepare_project(spec, task_work_dir, blobs, envs, emit)  # PrepareFailed on a refusal
    ... start the worker; the project workload reads work/project-runtime.json ...
    await asyncio.to_thread(collect_outputs, blobs, prepared.workdir, prepared.output_dir, emit)  # at the end
    prepared.release()                                                         # the env and the pins go

prepare_project: the manifest input blob -> every file blob present (else FAILED SETUP: the controller pushes them
before RunTask, so a gap is its bug or an eviction, worth a retry) -> the project's blobs pinned for the task's
life -> the snapshot materialized into `work/project` (in a thread) -> the env (EnvCache.ensure, its build log
lines journaled as agent log lines) -> EnvironmentReady -> `work/project-runtime.json`. An env that uv refuses, or
an env file that is not in the project, is PrepareFailed(ENV_BUILD): the same on every agent, so the job fails
once; a flaky download is PrepareFailed(SETUP), retried as usual. A cancel is a CancelledError of the coroutine:
what it held is given back, and EnvCache stops the uv build when no other task waits for it.

collect_outputs: every regular file under the output dir (symlinks followed only while they stay inside it),
hashed and copied into the blob cache in one pass each, one ArtifactReady(kind "output", name = path relative to
the output dir) per file. At most MAX_OUTPUT_FILES files and the blob cache's size in bytes; what is left out is
said in an agent log line. It never raises: the task's own outcome stands whatever happens here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import tensorfleet_agent
from tensorfleet_agent.core import project_layout
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import (
    MAX_MANIFEST_BYTES,
    ManifestEntry,
    check_path,
    manifest_from_bytes,
    manifest_id,
)
from tensorfleet_agent.core.types import ArtifactReady, EnvironmentReady, EventPayload, ExitCause, LogLine, TaskSpec
from tensorfleet_agent.runtime.blobs import BlobStore
from tensorfleet_agent.runtime.envs import ENV_FILES, Env, EnvBuildError, EnvCache, EnvSpec
from tensorfleet_agent.runtime.workdir import BlobsMissing, materialize, missing_blobs

log = logging.getLogger(__name__)

Emit = Callable[[EventPayload], None]
MAX_OUTPUT_FILES = 10_000
_CHUNK = 1 << 20


class PrepareFailed(Exception):
    """PREPARING could not finish: `cause` is ExitCause.SETUP (worth a retry) or ENV_BUILD (permanent)."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message


@dataclass
class PreparedProject:
    """What a project task holds while it runs: its env (None with env none) and the pins on its blobs."""

    workdir: Path
    output_dir: Path
    runtime: dict[str, str]
    ready: EnvironmentReady
    env: Env | None
    _blobs: BlobStore = field(repr=False)
    _pinned: tuple[str, ...] = field(repr=False)
    _released: bool = field(default=False, repr=False)

    def release(self) -> None:
        if not self._released:
            self._released = True
            if self.env is not None:
                self.env.release()
            self._blobs.unpin(self._pinned)


def sdk_dir() -> Path:
    """The folder holding the dependency-free task SDK module, put on the command's PYTHONPATH."""
    return Path(tensorfleet_agent.__file__).resolve().parent / "task_sdk"


def output_dir_of(workdir: Path, spec: TaskSpec) -> Path:
    """The output dir the task's params name (relative to the project dir, default "outputs")."""
    relative = str(spec.params.get("output_dir") or project_layout.DEFAULT_OUTPUT_DIR)
    check_path(relative.rstrip("/") or relative, "params.output_dir")
    return workdir / relative.rstrip("/")


def _read_manifest(blobs: BlobStore, spec: TaskSpec) -> tuple[ManifestEntry, ...]:
    ref = next((r for r in spec.inputs if r.name == project_layout.MANIFEST_INPUT), None)
    if ref is None:
        raise PrepareFailed(
            ExitCause.SETUP, f"the task has no {project_layout.MANIFEST_INPUT} input: no project to materialize"
        )
    wanted = str(spec.params.get("manifest") or ref.sha256)
    if wanted != ref.sha256:
        raise PrepareFailed(
            ExitCause.SETUP, f"params.manifest {wanted[:12]} is not the manifest input's blob {ref.sha256[:12]}"
        )
    path = blobs.path(ref.sha256)
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise PrepareFailed(ExitCause.SETUP, f"the project manifest is over {MAX_MANIFEST_BYTES >> 20} MiB")
        entries = manifest_from_bytes(path.read_bytes())
    except FileNotFoundError:
        raise PrepareFailed(ExitCause.SETUP, f"the project manifest {ref.sha256[:12]} left the blob cache") from None
    except ValidationError as exc:
        raise PrepareFailed(ExitCause.SETUP, f"the project manifest {ref.sha256[:12]} is invalid: {exc}") from None
    if manifest_id(entries) != ref.sha256:  # another encoding of it: fine, but say so in the agent's log
        log.info("manifest %s is not in canonical form", ref.sha256[:12])
    return entries


def _write_runtime(path: Path, runtime: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(runtime, indent=1))
    os.replace(tmp, path)


def _env_candidates(choice: str) -> frozenset[str]:
    """The files EnvSpec.from_dir reads for `--env choice`, but for what a requirements file includes."""
    if choice == "none":
        return frozenset()
    if choice == "auto":
        return frozenset(ENV_FILES)
    sibling = str(PurePosixPath(choice).parent / "pyproject.toml").removeprefix("./")
    return frozenset({choice, sibling} if PurePosixPath(choice).name == "uv.lock" else {choice})


def _materialize(blobs: BlobStore, entries: list[ManifestEntry], workdir: Path, fresh: bool) -> float:
    if fresh and workdir.exists():  # a half-made tree of an earlier try of this task id: start clean
        shutil.rmtree(workdir)
    return materialize(blobs, entries, workdir).seconds


async def _lay_out(blobs: BlobStore, entries: list[ManifestEntry], workdir: Path, *, fresh: bool) -> float:
    """Materialize `entries` (in a thread); PrepareFailed(SETUP) naming what went wrong; the seconds it took."""
    try:
        return await asyncio.to_thread(_materialize, blobs, entries, workdir, fresh)
    except BlobsMissing as exc:
        raise PrepareFailed(ExitCause.SETUP, str(exc)) from None
    except (ValidationError, OSError) as exc:
        raise PrepareFailed(ExitCause.SETUP, f"could not lay out the project: {exc}") from None


async def prepare_project(spec: TaskSpec, work: Path, blobs: BlobStore, envs: EnvCache, emit: Emit) -> PreparedProject:
    """PREPARING for a project task whose worker cwd is `work`; see the module docstring."""
    entries = await asyncio.to_thread(_read_manifest, blobs, spec)
    digests = tuple(sorted({e.sha256 for e in entries}))
    blobs.pin(digests)
    env: Env | None = None
    try:
        missing = await asyncio.to_thread(missing_blobs, blobs, entries)
        if missing:
            raise PrepareFailed(ExitCause.SETUP, f"{BlobsMissing(missing)} (the controller pushes them first)")
        workdir = work / project_layout.WORKDIR
        try:
            output_dir = output_dir_of(workdir, spec)
        except ValidationError as exc:
            raise PrepareFailed(ExitCause.SETUP, str(exc)) from None
        # The env files are laid out first, so the env (a uv build, or a cache hit) is got while the rest is.
        choice = str(spec.params.get("env") or "auto")
        first = [e for e in entries if e.path in _env_candidates(choice)]
        rest = [e for e in entries if e.path not in _env_candidates(choice)]
        files, size = len(entries), sum(e.size for e in entries)
        first_seconds = await _lay_out(blobs, first, workdir, fresh=True)

        async def lay_out_the_rest() -> float:
            seconds = first_seconds + await _lay_out(blobs, rest, workdir, fresh=False)
            emit(LogLine("agent", f"project: {files} files ({size / 2**20:.1f} MiB) laid out in {seconds:.2f} s"))
            return seconds

        later = False
        env_spec: EnvSpec | None = None
        try:
            env_spec = await asyncio.to_thread(EnvSpec.from_dir, workdir, choice)
        except ValueError:
            later = True  # it includes another file (-r): read it again once every file is there
        laying = asyncio.ensure_future(lay_out_the_rest())
        getting: asyncio.Future[Env] | None = None
        try:
            if later:
                await laying
                try:
                    env_spec = await asyncio.to_thread(EnvSpec.from_dir, workdir, choice)
                except ValueError as exc:
                    raise PrepareFailed(
                        ExitCause.ENV_BUILD, f"the project's environment could not be built: {exc}"
                    ) from None
            if env_spec is not None:
                getting = asyncio.ensure_future(envs.ensure(env_spec, log=lambda line: emit(LogLine("agent", line))))
            await asyncio.gather(laying, *([getting] if getting is not None else []))
        except BaseException as exc:
            for future in (laying, getting):
                if future is not None and not future.done():
                    future.cancel()  # an env build no other task waits for is stopped
            if getting is not None and getting.done() and not getting.cancelled() and getting.exception() is None:
                getting.result().release()  # the layout failed after the env was ready
            if isinstance(exc, EnvBuildError) and env_spec is not None:
                if exc.permanent:
                    raise PrepareFailed(
                        ExitCause.ENV_BUILD,
                        f"the project's environment could not be built from {env_spec.source}: {exc.reason}",
                    ) from None
                raise PrepareFailed(
                    ExitCause.SETUP, f"the project's environment could not be built (worth a retry): {exc.reason}"
                ) from None
            raise
        seconds = laying.result()
        if getting is None or env_spec is None:
            try:  # the project interpreter: the agent's own, or on a packaged agent the one its env cache found
                base = await envs.base_python()
            except EnvBuildError as exc:  # no usable Python on this agent: the same on every retry here
                raise PrepareFailed(ExitCause.ENV_BUILD, exc.reason) from None
            emit(
                LogLine("agent", f"environment: Python {base.version} at {base.path} ({base.found_by}; --env {choice})")
            )
            bin_dir, python, key, source, cache_hit, build_seconds = base.bin_dir, base.path, "", "", True, 0.0
            python_version = base.version
        else:
            env = getting.result()
            bin_dir, python, key, source = str(env.bin_dir), str(env.python), env.key, env_spec.source
            cache_hit, build_seconds = env.cache_hit, env.build_seconds
            python_version = env.python_version
        ready = EnvironmentReady(key, cache_hit, build_seconds, source, python_version, files, size, round(seconds, 3))
        runtime = {
            "workdir": str(workdir),
            "bin_dir": bin_dir,
            "python": python,
            "output_dir": str(output_dir),
            "sdk_dir": str(sdk_dir()),
            "env_key": key,
        }
        await asyncio.to_thread(_write_runtime, work / project_layout.RUNTIME_FILE, runtime)
        emit(ready)
        return PreparedProject(workdir, output_dir, runtime, ready, env, blobs, digests)
    except BaseException:
        if env is not None:
            env.release()
        blobs.unpin(digests)
        raise


# ---- outputs


@dataclass
class Collected:
    """What collect_outputs stored and what it left out (each with why)."""

    artifacts: list[ArtifactReady] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def collect_outputs(
    blobs: BlobStore, workdir: Path, output_dir: Path, emit: Emit, *, max_files: int = MAX_OUTPUT_FILES
) -> Collected:
    """Store the output dir's files as "output" artifacts; emits ArtifactReady per file and a summary log line.
    Blocking (hashing, copying): run it in a thread. Never raises."""
    started = time.monotonic()
    out = Collected()
    try:
        _collect(blobs, workdir, output_dir, out, max_files)
    except Exception as exc:  # the task's outcome stands: say it, and keep what was stored
        log.exception("collecting the outputs of %s failed", output_dir)
        out.skipped.append(f"collection stopped: {type(exc).__name__}: {exc}")
    out.seconds = time.monotonic() - started
    for artifact in out.artifacts:
        emit(artifact)
    if out.artifacts or out.skipped:
        total = sum(a.size for a in out.artifacts)
        emit(
            LogLine(
                "agent",
                f"outputs: {len(out.artifacts)} file(s), {total / 2**20:.1f} MiB stored from {output_dir.name}/ "
                f"in {out.seconds:.2f} s"
                + (f"; left out: {'; '.join(out.skipped[:20])}" if out.skipped else "")
                + (f" (and {len(out.skipped) - 20} more)" if len(out.skipped) > 20 else ""),
            )
        )
    return out


def _collect(blobs: BlobStore, workdir: Path, output_dir: Path, out: Collected, max_files: int) -> None:
    if not output_dir.exists():
        return  # the command wrote no outputs
    root = output_dir.resolve()
    project = workdir.resolve()
    if not root.is_dir() or not root.is_relative_to(project):
        out.skipped.append(f"{output_dir.name} is not a folder inside the project (it leads to {root})")
        return
    budget = blobs.limit_bytes
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):  # links to folders are listed, never walked into
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            target = path.resolve() if path.is_symlink() else path
            if path.is_symlink() and not target.is_relative_to(root):
                out.skipped.append(f"{rel} (a link leaving the output dir)")
                continue
            files.append((rel, target))
    if len(files) > max_files:
        out.skipped.append(f"{len(files) - max_files} file(s) past the first {max_files} (sorted by path)")
        files = files[:max_files]
    pinned: list[str] = []
    try:
        for rel, path in files:
            stored = _store(blobs, path, rel, budget, out)
            if stored is not None:
                pinned.append(stored.sha256)
                blobs.pin([stored.sha256])  # not evicted by the next file's copy before the controller fetches it
                budget -= stored.size
                out.artifacts.append(stored)
    finally:
        blobs.unpin(pinned)
    if out.artifacts:
        blobs.adopt_written([a.sha256 for a in out.artifacts])  # counted in the cache's bytes; evicted when due


def _store(blobs: BlobStore, path: Path, rel: str, budget: int, out: Collected) -> ArtifactReady | None:
    """One file into the cache: read once (hash and copy together), renamed into place under its sha256."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block us
    except OSError as exc:
        out.skipped.append(f"{rel} ({exc.strerror})")
        return None
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            out.skipped.append(f"{rel} (not a regular file)")
            return None
        if st.st_size > budget:
            out.skipped.append(f"{rel} ({st.st_size / 2**20:.1f} MiB: over the blob cache's room)")
            return None
        tmp = blobs.root / "incoming" / f"{uuid.uuid4().hex}.part"  # swept at start if we die mid-copy
        tmp.parent.mkdir(parents=True, exist_ok=True)
        hasher, size = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    hasher.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
            digest = hasher.hexdigest()
            dest = blobs.path(digest)
            if dest.is_file():
                tmp.unlink()
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, dest)
            blobs.touch(digest)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    return ArtifactReady(digest, size, project_layout.OUTPUT_ARTIFACT_KIND, rel)
