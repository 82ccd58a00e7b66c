"""The agent's cache of project Python environments, built with uv, keyed by what they are built from.

How it is meant to be used (the task runner, while the task is PREPARING):

    spec = EnvSpec.from_files("requirements.txt", {"requirements.txt": data})   # or EnvSpec.from_dir(dir, "auto")
    with await cache.ensure(spec, log=task_log) as env:     # build log lines stream to task_log
        run(COMMAND, PATH=f"{env.bin_dir}:{PATH}")           # status: env.key, env.cache_hit, env.build_seconds
    # leaving the block releases the env: only then may LRU eviction remove it

A build that fails raises EnvBuildError: `permanent` (uv refused the requirements: fail the job once) or not
(a flaky download: retry). Layout under the cache root (`<data dir>/envs`):

    <key>/venv/       the env (relocatable venv on the project interpreter, see below)
    <key>/src/        the requirement files it was built from
    <key>/env.json    what it is (written before the rename: a <key>/ dir is complete by construction)
    <key>/usage.json  last used, jobs served
    .building/        builds in progress; renamed to <key>/ when complete, swept at start (a crash leaves no env)
    .trash/           evicted envs being deleted
    .python/bin/      `python`, `python3` links to the project interpreter when it is not the agent's own

The project interpreter (what every env is built on, and what `--env none` runs): the one the agent was started
with (`--python PATH` or $TENSORFLEET_PROJECT_PYTHON), else the agent's own Python, except in a packaged
(PyInstaller) agent, whose sys.executable is the agent program: there `uv python find --system` (no download; it
finds installed interpreters, honouring uv's settings), else `python3` on PATH. With none, every project task fails
with a permanent EnvBuildError saying how to fix it (NO_PYTHON). The agent's torch and numpy are linked into an env
only when the interpreter has the agent's own ABI (base_packages).

What goes in a key: the requirement files' names and contents, the project interpreter's version and ABI, the
platform tag, uv's
index settings in effect on this agent (UV_INDEX_URL, UV_FIND_LINKS, UV_OFFLINE, ... and the uv.toml uv reads) and
the agent's torch (base_packages) that the env reuses. One asyncio task per key builds; later callers of the same
key join it and get its log lines replayed. The data dir is locked per agent, so no cross-process lock is needed.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import logging
import os
import platform
import posixpath
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.project_spec import check_env_choice
from tensorfleet_agent.runtime.uv_run import EnvBuildError, run_uv, uv_binary

if TYPE_CHECKING:  # imported where used: importlib.metadata and packaging cost every agent start ~50 ms otherwise
    from tensorfleet_agent.runtime import base_packages

__all__ = [
    "Env",
    "EnvBuildError",
    "EnvCache",
    "EnvInfo",
    "EnvSpec",
    "Interpreter",
    "find_python",
    "index_settings",
    "key_for",
]

logger = logging.getLogger(__name__)

DEFAULT_LIMIT_BYTES = 20 << 30
DEFAULT_BUILD_TIMEOUT_S = 3600.0
KEY_VERSION = "tensorfleet-env-1"  # bump when the way an env is built changes
ENV_FILES = ("uv.lock", "pyproject.toml", "requirements.txt")  # --env auto: the first one present wins
INDEX_VARIABLES = (
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
    "UV_OFFLINE",
    "UV_INDEX_STRATEGY",
    "UV_PRERELEASE",
    "UV_RESOLUTION",
    "UV_EXCLUDE_NEWER",
    "UV_CONFIG_FILE",
    "UV_NO_CONFIG",
)
Kind = Literal["requirements", "pyproject", "uv.lock"]
PYTHON_VAR = "TENSORFLEET_PROJECT_PYTHON"
MIN_PYTHON = (3, 9)  # the task SDK's oldest
PROBE_TIMEOUT_S = 30.0
NO_PYTHON = (
    "this agent has no Python interpreter for project jobs ({why}); install python3 (>= {min}) on it, or start "
    "the agent with --python PATH (or TENSORFLEET_PROJECT_PYTHON=PATH) naming one"
)
_PROBE = (
    "import json, platform, sys, sysconfig; print(json.dumps({'implementation': sys.implementation.name, "
    "'version': platform.python_version(), 'abi': sysconfig.get_config_var('SOABI') or ''}))"
)


@dataclass(frozen=True)
class EnvSpec:
    """What an env is built from: `source` names the env file, `files` holds it (and, for uv.lock, pyproject.toml)."""

    source: str
    files: Mapping[str, bytes]

    def __post_init__(self) -> None:
        if not self.files:
            raise ValueError("an env spec needs at least its env file")
        for name in self.files:
            path = PurePosixPath(name)
            if not name or path.is_absolute() or ".." in path.parts or "\\" in name:
                raise ValueError(f"env file name {name!r} must be a relative path inside the project")
        if self.source not in self.files:
            raise ValueError(f"env file {self.source!r} is not among the files sent: {sorted(self.files)}")
        if self.kind == "uv.lock" and self._sibling("pyproject.toml") not in self.files:
            raise ValueError(f"{self.source} needs the pyproject.toml next to it; uv sync reads both")

    @property
    def kind(self) -> Kind:
        name = PurePosixPath(self.source).name
        if name == "uv.lock":
            return "uv.lock"
        if name == "pyproject.toml":
            return "pyproject"
        return "requirements"

    def _sibling(self, name: str) -> str:
        return str(PurePosixPath(self.source).parent / name).removeprefix("./")

    @classmethod
    def from_files(cls, source: str, files: Mapping[str, bytes]) -> EnvSpec:
        return cls(source=source, files=dict(files))

    @classmethod
    def from_dir(cls, project: Path, choice: str = "auto") -> EnvSpec | None:
        """`--env auto|none|FILE` for a project folder: None means the agent's own Python (blocking: small reads)."""
        if choice == "none":
            return None
        if choice == "auto":
            source = next((name for name in ENV_FILES if (project / name).is_file()), None)
            if source is None:
                return None
        else:
            _check_env_choice(choice)
            source = PurePosixPath(choice).as_posix()
            if not (project / source).is_file():
                raise ValueError(f"--env {choice}: no such file in {project}")
        files: dict[str, bytes] = {}
        if PurePosixPath(source).name == "uv.lock":
            files["pyproject.toml" if "/" not in source else str(PurePosixPath(source).parent / "pyproject.toml")] = b""
        todo = [source, *files]
        while todo:
            name = todo.pop()
            path = project / name
            if not path.is_file():
                raise ValueError(f"{name} (needed by --env {choice}) is not a file in {project}")
            if not path.resolve().is_relative_to(project.resolve()):  # a link in the project leading out of it
                raise ValueError(f"{name} (needed by --env {choice}) leads outside the project, to {path.resolve()}")
            files[name] = path.read_bytes()
            if name.endswith((".txt", ".in")):
                todo.extend(n for n in _included(name, files[name]) if n not in files)
        return cls(source=source, files=files)


def _check_env_choice(choice: str) -> None:
    """An env file named by the task must be a path inside the project: the controller's own check, again here."""
    try:
        check_env_choice(choice, "--env")
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


_INCLUDE = re.compile(r"^\s*(?:-r|-c|--requirement|--constraint)(?:\s*=\s*|\s+|(?=[^\s-]))(\S+)")


def _included(name: str, data: bytes) -> list[str]:
    """The files a requirements file pulls in with -r/-c, as project paths (URLs left to uv)."""
    found = []
    for line in data.decode("utf-8", "replace").splitlines():
        match = _INCLUDE.match(line)
        if match is None or "://" in match.group(1):
            continue
        path = posixpath.normpath(posixpath.join(posixpath.dirname(name), match.group(1)))
        if path.startswith("../") or path == ".." or path.startswith("/"):
            raise ValueError(f"{name} includes {match.group(1)}, which is outside the project")
        found.append(path)
    return found


@dataclass(frozen=True)
class EnvInfo:
    """One cached env, as `tensorfleet agents envs` lists it."""

    key: str
    size: int
    last_used: float
    jobs: int
    python: str
    source: str
    build_seconds: float
    in_use: int


@dataclass
class Env:
    """A ready env held by a task: release it (or leave its `with` block) when the task is done with it."""

    key: str
    path: Path  # the venv
    cache_hit: bool
    build_seconds: float
    _release: Callable[[], None] = field(repr=False)
    python_version: str = ""  # of the interpreter it was built on: 3.11.7
    _released: bool = field(default=False, repr=False)

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> Path:
        return self.bin_dir / "python"

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._release()

    def __enter__(self) -> Env:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_frozen() -> bool:
    """A packaged (PyInstaller) agent: sys.executable is the agent program, not a Python interpreter."""
    return bool(getattr(sys, "frozen", False))


@dataclass(frozen=True)
class Interpreter:
    """The Python project envs are built on (and `--env none` runs): where it is and what it is."""

    path: str  # what `uv venv --python` gets
    implementation: str  # cpython
    version: str  # 3.11.7
    abi: str  # sysconfig SOABI: cpython-311-x86_64-linux-gnu
    shares_agent_packages: bool  # the agent's own kind: the agent's torch/numpy can be linked into its envs
    bin_dir: str  # a folder whose `python` (and `python3`) runs it: first on a command's PATH with --env none
    found_by: str  # "the agent's own Python", "--python", "uv python find", "python3 on PATH"

    @property
    def tag(self) -> str:
        return f"{self.implementation}-{self.version}"


def _agent_interpreter() -> Interpreter:
    return Interpreter(
        sys.executable,
        sys.implementation.name,
        platform.python_version(),
        sysconfig.get_config_var("SOABI") or "",
        True,
        os.path.dirname(sys.executable),
        "the agent's own Python",
    )


def _clean_environ(environ: Mapping[str, str]) -> dict[str, str]:
    drop = ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
    return {k: v for k, v in environ.items() if k not in drop}


def _probe(path: str, environ: Mapping[str, str]) -> dict[str, str] | str:
    """What the interpreter at `path` is (implementation, version, abi), or why it is not a usable one (blocking)."""
    try:
        out = subprocess.run(
            [path, "-I", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            env=_clean_environ(environ),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{path} does not run: {exc}"
    try:
        facts = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else None
    except (ValueError, IndexError):
        facts = None
    if not isinstance(facts, dict):
        said = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
        return f"{path} is not a Python interpreter that runs here ({said[:200]})"
    try:
        version = tuple(int(x) for x in str(facts["version"]).split(".")[:2])
    except (KeyError, ValueError):
        return f"{path} reports no Python version"
    if version < MIN_PYTHON:
        return f"{path} is Python {facts['version']}; project jobs need {'.'.join(map(str, MIN_PYTHON))} or newer"
    return {k: str(facts.get(k) or "") for k in ("implementation", "version", "abi")}


def _uv_python_find(environ: Mapping[str, str]) -> str | None:
    """An installed interpreter uv finds (never a download; uv's settings such as UV_OFFLINE honoured)."""
    try:
        uv = uv_binary()
    except FileNotFoundError:
        return None
    env = _clean_environ(environ)
    env.update(NO_COLOR="1", UV_PYTHON_DOWNLOADS="never")
    request = f">={'.'.join(map(str, MIN_PYTHON))}"
    try:
        out = subprocess.run(
            [uv, "python", "find", "--system", "--no-project", request],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            env=env,
            cwd="/",  # no project or .venv of wherever the agent was started
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = out.stdout.strip().splitlines()
    return found[-1].strip() if out.returncode == 0 and found else None


def find_python(
    configured: str | None = None, environ: Mapping[str, str] | None = None, *, link_dir: Path | None = None
) -> Interpreter:
    """The project interpreter (the rule is in the module docstring); blocking (it may run uv and a probe).

    `configured` is --python / $TENSORFLEET_PROJECT_PYTHON (a path, or a name looked up on PATH). An interpreter
    that is not the agent's own gets `python` and `python3` links in `link_dir` (its bin_dir). Raises a permanent
    EnvBuildError saying how to fix it when there is none.
    """
    environ = os.environ if environ is None else environ
    minimum = ".".join(map(str, MIN_PYTHON))
    candidates: list[tuple[str, str]] = []
    if configured:
        where = shutil.which(configured, path=environ.get("PATH", os.defpath))
        if where is None:
            why = f"--python {configured} (or ${PYTHON_VAR}) is not an executable file, nor a command on PATH"
            raise EnvBuildError(NO_PYTHON.format(why=why, min=minimum), permanent=True)
        candidates.append((os.path.abspath(where), "--python"))
    elif not is_frozen():
        return _agent_interpreter()
    else:
        found = _uv_python_find(environ)
        if found:
            candidates.append((found, "uv python find"))
        python3 = shutil.which("python3", path=environ.get("PATH", os.defpath))
        if python3 and python3 != found:
            candidates.append((python3, "python3 on PATH"))
    problems: list[str] = []
    for path, how in candidates:
        facts = _probe(path, environ)
        if isinstance(facts, str):
            problems.append(facts)
            continue
        agent_abi = sysconfig.get_config_var("SOABI") or ""
        shares = (
            not is_frozen()
            and facts["implementation"] == sys.implementation.name
            and bool(facts["abi"])
            and facts["abi"] == agent_abi
        )
        bin_dir = os.path.dirname(path)
        if link_dir is not None:
            bin_dir = str(_link_python(link_dir, path, facts["version"]))
        return Interpreter(path, facts["implementation"], facts["version"], facts["abi"], shares, bin_dir, how)
    if configured:
        why = "; ".join(problems)
    elif problems:
        why = "the packaged agent found none that runs: " + "; ".join(problems)
    else:
        why = "a packaged agent cannot build envs on itself, and `uv python find` and python3 on PATH found none"
    raise EnvBuildError(NO_PYTHON.format(why=why, min=minimum), permanent=True)


def _link_python(link_dir: Path, path: str, version: str) -> Path:
    """`python`, `python3` and `pythonX.Y` in link_dir, each a link to `path` (replaced atomically)."""
    link_dir.mkdir(parents=True, exist_ok=True)
    major_minor = ".".join(version.split(".")[:2])
    for name in ("python", "python3", f"python{major_minor}"):
        tmp = link_dir / f".{name}.{uuid.uuid4().hex[:8]}"
        tmp.symlink_to(path)
        os.replace(tmp, link_dir / name)
    return link_dir


def platform_tag() -> str:
    return f"{sysconfig.get_platform()}-{platform.libc_ver()[0] or 'nolibc'}"


def _uv_config_files(environ: Mapping[str, str]) -> list[Path]:
    """The uv.toml files uv reads on this agent (user and system level; a project's own rides in its files)."""
    if environ.get("UV_CONFIG_FILE"):
        return [Path(environ["UV_CONFIG_FILE"])]
    home = Path(environ.get("HOME", str(Path.home())))
    xdg = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    dirs = [Path(d) for d in environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":") if d]
    return [xdg / "uv" / "uv.toml", *(d / "uv" / "uv.toml" for d in dirs), Path("/etc/uv/uv.toml")]


def index_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """uv's settings that change what gets installed: the index variables and the uv.toml contents (blocking)."""
    environ = os.environ if environ is None else environ
    settings = {name: environ[name] for name in INDEX_VARIABLES if name in environ}
    if not environ.get("UV_NO_CONFIG"):
        for path in _uv_config_files(environ):
            with contextlib.suppress(OSError):
                settings[f"file:{path}"] = path.read_text(errors="replace")
    return settings


def key_for(files: Mapping[str, bytes], python: str, platform: str, index: Mapping[str, str], base: str = "") -> str:
    """The cache key: a hash of everything that decides what the env contains."""
    h = hashlib.sha256()

    def put(label: str, value: bytes) -> None:
        h.update(f"{label}\0{len(value)}\0".encode())
        h.update(value)

    put("version", KEY_VERSION.encode())
    for name in sorted(files):
        put(f"file:{name}", files[name])
    put("python", python.encode())
    put("platform", platform.encode())
    for name in sorted(index):
        put(f"index:{name}", index[name].encode())
    put("base", base.encode())
    return h.hexdigest()[:32]


def disk_usage(path: Path) -> int:
    """Bytes allocated on disk under `path` (symlinks not followed, a hardlinked inode counted once; blocking)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [path]
    while stack:
        with contextlib.suppress(OSError), os.scandir(stack.pop()) as it:
            for entry in it:
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


@dataclass
class _Meta:
    key: str
    python: str
    source: str
    kind: str
    size: int
    build_seconds: float
    created: float
    last_used: float
    jobs: int


class _Build:
    """One build in flight: its task and the log sinks of every caller waiting on it."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.sinks: list[Callable[[str], None]] = []
        self.task: asyncio.Task[_Meta] | None = None
        self.waiters = 0  # callers of ensure() waiting on it; the last one to be cancelled stops the build

    def emit(self, line: str) -> None:
        self.lines.append(line)
        for sink in list(self.sinks):
            try:
                sink(line)
            except Exception:  # a caller's broken log must not break the build the others wait on
                logger.exception("env build log sink failed")

    def join(self, sink: Callable[[str], None]) -> None:
        for line in self.lines:
            sink(line)
        self.sinks.append(sink)


class EnvCache:
    """Envs under `root`, built on demand with uv, evicted least-recently-used beyond `limit_bytes`."""

    def __init__(
        self,
        root: Path,
        limit_bytes: int = DEFAULT_LIMIT_BYTES,
        *,
        python: str | None = None,
        environ: Mapping[str, str] | None = None,
        build_timeout_s: float = DEFAULT_BUILD_TIMEOUT_S,
    ) -> None:
        if limit_bytes < 0:
            raise ValueError(f"env cache limit must be >= 0 bytes, got {limit_bytes}")
        self.root = root
        self.limit_bytes = limit_bytes
        self._environ = dict(os.environ if environ is None else environ)
        self.configured_python = python or self._environ.get(PYTHON_VAR) or None  # --python, else the variable
        self._interpreter: Interpreter | None = None
        self._interpreter_lock = asyncio.Lock()
        self.build_timeout_s = build_timeout_s
        self._ready: dict[str, _Meta] | None = None
        self._load_lock = asyncio.Lock()
        self._builds: dict[str, _Build] = {}
        self._in_use: Counter[str] = Counter()
        self._base: list[base_packages.BasePackage] | None = None
        self.builds_started = 0  # uv builds this cache ran (tests and metrics read it)
        self._closed = False

    # -- keys -------------------------------------------------------------------------------------------------

    def interpreter(self) -> Interpreter:
        """The project interpreter (module docstring); found once, then kept (blocking: it may run uv and a probe).
        Raises a permanent EnvBuildError saying how to fix it when there is none (looked for again next time)."""
        if self._interpreter is None:
            self._interpreter = find_python(
                self.configured_python, self._environ, link_dir=self.root / ".python" / "bin"
            )
        return self._interpreter

    async def base_python(self) -> Interpreter:
        """The project interpreter, found in a thread: what `--env none` runs (its .bin_dir first on PATH, its
        .path and .version in the runtime file and EnvironmentReady). A permanent EnvBuildError when there is none."""
        if self._interpreter is not None:
            return self._interpreter
        async with self._interpreter_lock:
            return await asyncio.to_thread(self.interpreter)

    def _base_packages(self) -> list[base_packages.BasePackage]:
        """The agent's packages linked into each env: none when the interpreter is not of the agent's own kind."""
        if not self.interpreter().shares_agent_packages:
            return []
        if self._base is None:
            from tensorfleet_agent.runtime import base_packages

            self._base = base_packages.base_closure()
        return self._base

    def key(self, spec: EnvSpec) -> str:
        """The key `spec` has on this agent (blocking: reads uv.toml and the installed torch's metadata)."""
        from tensorfleet_agent.runtime import base_packages

        python = self.interpreter()
        return key_for(
            spec.files,
            f"{python.tag} {python.abi}",
            platform_tag(),
            index_settings(self._environ),
            base_packages.fingerprint(self._base_packages()),
        )

    # -- the index of ready envs ------------------------------------------------------------------------------

    async def _index(self) -> dict[str, _Meta]:
        async with self._load_lock:
            if self._ready is None:
                self._ready = await asyncio.to_thread(self._scan)
            return self._ready

    def _scan(self) -> dict[str, _Meta]:
        """Read the ready envs; sweep what a crash left (half builds, half deletions, anything unreadable)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in (".building", ".trash"):
            shutil.rmtree(self.root / leftover, ignore_errors=True)
        ready: dict[str, _Meta] = {}
        for entry in self.root.iterdir():
            if entry.name.startswith("."):
                continue
            try:
                meta = _Meta(**json.loads((entry / "env.json").read_text()))
                with contextlib.suppress(OSError, ValueError):
                    usage = json.loads((entry / "usage.json").read_text())
                    meta.last_used, meta.jobs = float(usage["last_used"]), int(usage["jobs"])
                if meta.key != entry.name:
                    raise ValueError(f"env.json names key {meta.key}")
            except (OSError, ValueError, TypeError) as exc:
                logger.warning("removing unreadable env %s: %s", entry, exc)
                self._trash(entry)
                continue
            ready[meta.key] = meta
        return ready

    def _trash(self, path: Path) -> None:
        trash = self.root / ".trash" / f"{path.name}.{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(exist_ok=True)
        try:
            path.rename(trash)  # gone from the index at once; the slow delete follows
        except OSError:
            trash = path
        shutil.rmtree(trash, ignore_errors=True)

    # -- ensure -----------------------------------------------------------------------------------------------

    async def ensure(self, spec: EnvSpec, log: Callable[[str], None]) -> Env:
        """A ready env for `spec`, held for the caller: from the cache (no uv call) or built now with uv."""
        await self.base_python()  # found once, under a lock: concurrent first tasks do not each run uv
        key = await asyncio.to_thread(self.key, spec)
        ready = await self._index()
        meta = ready.get(key)
        if meta is not None and key not in self._builds:
            self._in_use[key] += 1  # held before the check below: eviction cannot take it meanwhile
            if await asyncio.to_thread((self.root / key / "venv" / "pyvenv.cfg").is_file):
                log(f"environment {key} from the cache ({spec.source}, built in {meta.build_seconds:.1f} s)")
                await self._touch(meta)
                return self._env(meta, cache_hit=True)
            logger.warning("env %s vanished from disk; building it again", key)
            self._unhold(key)
            ready.pop(key, None)
        build = self._builds.get(key)
        if build is None:
            build = _Build()
            self._builds[key] = build
            build.task = asyncio.create_task(self._build(key, spec, build), name=f"env-build-{key}")
            build.task.add_done_callback(lambda _t: self._builds.pop(key, None))
        else:
            log(f"environment {key} is being built for another task; waiting for that build")
        self._in_use[key] += 1  # held from now on: eviction never takes an env a caller waits for
        build.join(log)
        build.waiters += 1
        assert build.task is not None
        try:
            meta = await asyncio.shield(build.task)  # one caller's cancel never breaks the build others wait on
        except asyncio.CancelledError:
            self._unhold(key)
            current = asyncio.current_task()
            if current is not None and current.cancelling():  # this caller was cancelled
                if build.waiters == 1 and not build.task.done():
                    build.task.cancel()  # nobody else wants it: uv is killed, the half-built dir removed
                raise
            if self._closed:
                raise
            # The build was stopped by the cancel of the caller that was its only waiter, just before this one
            # joined it: build it again for this caller.
        except BaseException:
            self._unhold(key)
            raise
        else:
            await self._touch(meta)
            return self._env(meta, cache_hit=False)
        finally:
            build.waiters -= 1
            with contextlib.suppress(ValueError):
                build.sinks.remove(log)
        if self._builds.get(key) is build:
            del self._builds[key]
        log(f"the build of environment {key} was stopped when another task was cancelled; building it again")
        return await self.ensure(spec, log)

    def _env(self, meta: _Meta, *, cache_hit: bool) -> Env:
        return Env(
            key=meta.key,
            path=self.root / meta.key / "venv",
            cache_hit=cache_hit,
            build_seconds=0.0 if cache_hit else meta.build_seconds,
            _release=lambda: self._unhold(meta.key),
            python_version=meta.python.partition("-")[2],
        )

    def _unhold(self, key: str) -> None:
        self._in_use[key] -= 1
        if self._in_use[key] <= 0:
            del self._in_use[key]

    async def _touch(self, meta: _Meta) -> None:
        meta.last_used = time.time()
        meta.jobs += 1
        usage = {"last_used": meta.last_used, "jobs": meta.jobs}
        await asyncio.to_thread(_write_json, self.root / meta.key / "usage.json", usage)

    # -- building ---------------------------------------------------------------------------------------------

    def _uv_environ(self, venv: Path) -> dict[str, str]:
        env = {k: v for k, v in self._environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH")}
        env.update(NO_COLOR="1", UV_NO_PROGRESS="1", UV_PROJECT_ENVIRONMENT=str(venv))
        env.setdefault("UV_PYTHON_DOWNLOADS", "never")  # the env's interpreter is the one found; never fetch one
        return env

    async def _build(self, key: str, spec: EnvSpec, build: _Build) -> _Meta:
        self.builds_started += 1
        started = time.monotonic()
        work = self.root / ".building" / f"{key}.{uuid.uuid4().hex[:8]}"
        src, venv = work / "src", work / "venv"
        build.emit(f"building environment {key} from {spec.source} with uv")
        try:
            await asyncio.to_thread(_write_sources, src, spec.files)
            uv_env = self._uv_environ(venv)

            async def uv(*args: str) -> None:
                await run_uv(args, cwd=src, env=uv_env, sink=build.emit, timeout_s=self.build_timeout_s)

            interpreter = self.interpreter()  # found before the key was
            await uv("venv", "--relocatable", "--no-project", "--python", interpreter.path, str(venv))
            from tensorfleet_agent.runtime import base_packages

            base = self._base_packages()
            site = await asyncio.to_thread(_site_packages, venv)
            await asyncio.to_thread(base_packages.link_base_packages, site, base)
            reused = [f"{p.name} {p.version}" for root in base_packages.ROOTS for p in base if p.name == root]
            if reused:
                build.emit(f"reusing the agent's {', '.join(reused)} (a requirement they do not meet is installed)")
            python = str(venv / "bin" / "python")
            if spec.kind == "requirements":
                await uv("pip", "install", "--python", python, "-r", spec.source)
            elif spec.kind == "pyproject":
                # The project's dependencies only: its own code comes with each job's snapshot, so a code change
                # never needs a new env (and the env's key, the pyproject's content, stays true to the env).
                await uv("pip", "install", "--python", python, "-r", spec.source)
            else:
                project = str(src / PurePosixPath(spec.source).parent)
                skip = await asyncio.to_thread(_lock_reuses, src / spec.source, base)
                await uv(
                    "sync", "--frozen", "--inexact", "--no-install-workspace", "--project", project,
                    "--python", python, *(arg for name in skip for arg in ("--no-install-package", name)),
                )  # fmt: skip
            seconds = time.monotonic() - started
            size = await asyncio.to_thread(disk_usage, work)
            now = time.time()
            meta = _Meta(key, interpreter.tag, spec.source, spec.kind, size, round(seconds, 3), now, now, 0)
            await asyncio.to_thread(_finish, work, self.root / key, meta)
        except BaseException as exc:
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, work, True))
            if isinstance(exc, EnvBuildError):
                exc.key = key
                build.emit(f"environment {key} failed ({'permanent' if exc.permanent else 'may be retried'})")
            raise
        ready = await self._index()
        ready[key] = meta
        build.emit(f"environment {key} ready in {seconds:.1f} s ({size / 2**20:.0f} MiB)")
        await self._evict(keep=key)
        return meta

    # -- eviction, listing, pruning ---------------------------------------------------------------------------

    async def _evict(self, *, keep: str | None = None, target: int | None = None) -> list[str]:
        """Remove least-recently-used envs no task holds until the total fits `target` (default: the limit)."""
        target = self.limit_bytes if target is None else target
        ready = await self._index()
        total = sum(m.size for m in ready.values())
        victims: list[str] = []
        for meta in sorted(ready.values(), key=lambda m: m.last_used):
            if total <= target:
                break
            if meta.key == keep or self._in_use[meta.key] > 0 or meta.key in self._builds:
                continue
            victims.append(meta.key)
            total -= meta.size
            del ready[meta.key]  # chosen on the loop thread: no caller can be handed it from here on
        for key in victims:
            logger.info("evicting env %s", key)
            await asyncio.to_thread(self._trash, self.root / key)
        return victims

    async def list(self) -> list[EnvInfo]:
        """The cached envs, most recently used first."""
        ready = await self._index()
        return [
            EnvInfo(m.key, m.size, m.last_used, m.jobs, m.python, m.source, m.build_seconds, self._in_use[m.key])
            for m in sorted(ready.values(), key=lambda m: m.last_used, reverse=True)
        ]

    async def prune(self, keep_bytes: int = 0) -> builtins.list[str]:
        """Remove envs no task holds, least recently used first, until at most `keep_bytes` remain; their keys."""
        return await self._evict(target=keep_bytes)

    async def close(self) -> None:
        """Stop builds in flight (their uv processes are killed and their half-built dirs removed)."""
        self._closed = True
        tasks = [b.task for b in self._builds.values() if b.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _write_json(path: Path, value: object) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _write_sources(src: Path, files: Mapping[str, bytes]) -> None:
    for name, data in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if len(found) != 1:
        raise EnvBuildError(f"uv venv made no single site-packages dir under {venv}: {found}", permanent=False)
    return found[0]


def _lock_reuses(lock: Path, base: list[base_packages.BasePackage]) -> list[str]:
    """Packages of the lock the agent already has at the locked release (torch 2.13.0 for a 2.13.0+cu128)."""
    from tensorfleet_agent.runtime import base_packages

    have = {p.name: base_packages.public_version(p.version) for p in base}
    try:
        packages = tomllib.loads(lock.read_text()).get("package", [])
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise EnvBuildError(f"{lock.name} is not a readable uv lock file: {exc}", permanent=True) from exc
    return sorted(
        {p["name"] for p in packages if isinstance(p, dict) and have.get(str(p.get("name"))) == p.get("version")}
    )


def _finish(work: Path, final: Path, meta: _Meta) -> None:
    """Make a complete build visible: env.json inside, then one rename (a crash before it leaves no env)."""
    _write_json(work / "env.json", meta.__dict__)
    _write_json(work / "usage.json", {"last_used": meta.last_used, "jobs": meta.jobs})
    if final.exists():  # only after a crash between rename and index update: the old one is stale
        shutil.rmtree(final)
    work.rename(final)
