"""A project folder as a snapshot (issue 19, 'The snapshot'): which files, their hashes, refusals, git state, upload."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.project_tree import generate_project, git, write_tree
from tensorfleet_agent.core.digest import file_digest
from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.core.manifest import (
    MODE_EXECUTABLE,
    MODE_FILE,
    ManifestEntry,
    manifest_id,
    parse_manifest,
    validate_manifest,
)
from tensorfleet_desktop.project import ProjectError, Snapshot, git_info, hash_cache, snapshot
from tensorfleet_desktop.project import scan as scan_module
from tensorfleet_desktop.project.hash_cache import HashCache

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="the git executable is not installed")
MiB = 1 << 20
SHA_A = "a" * 64

# Directory patterns, anchored patterns, negations, nested files, a deeper file overriding a shallower one.
RULES_TREE: dict[str, str | bytes] = {
    ".gitignore": "*.log\n!keep.log\nbuild/\n!build/out.o\n/data/*.bin\n/top.txt\nnotes/**/draft.md\n*.py[co]\n"
    "**/cache/\n\\#literal\n# a comment\n",
    "#literal": "ignored: an escaped # is a pattern\n",
    "a/b/cache/x.txt": "ignored by **/cache/\n",
    "a/b/mod.pyc": "ignored by a character class\n",
    "a/b/mod.py": "kept\n",
    "top.txt": "anchored at the top: ignored\n",
    "train.py": "print('train')\n",
    "keep.log": "re-included\n",
    "run.log": "ignored\n",
    "build/out.o": "a folder pattern\n",
    "data/big.bin": "anchored: ignored\n",
    "data/small.csv": "a,b\n",
    "src/pkg/__init__.py": "",
    "src/pkg/top.txt": "the anchored /top.txt does not reach here\n",
    "src/pkg/data/x.bin": "/data/*.bin is anchored to the top folder\n",
    "src/pkg/build": "a file named build: 'build/' matches folders only\n",
    "src/.gitignore": "!debug.log\n*.py.bak\n",
    "src/debug.log": "re-included by the deeper .gitignore\n",
    "src/pkg/mod.py.bak": "ignored by the deeper .gitignore\n",
    "src/pkg/deep/other.log": "still ignored\n",
    "notes/a/b/draft.md": "ignored by **\n",
    "notes/a/final.md": "kept\n",
    "logs/.gitignore": "*\n!.gitignore\n",
    "logs/today.txt": "everything in logs/ but the .gitignore is ignored\n",
}
RULES_SENT = [
    ".gitignore",
    "a/b/mod.py",
    "data/small.csv",
    "keep.log",
    "logs/.gitignore",
    "notes/a/final.md",
    "src/.gitignore",
    "src/debug.log",
    "src/pkg/__init__.py",
    "src/pkg/build",
    "src/pkg/data/x.bin",
    "src/pkg/top.txt",
    "train.py",
]


def paths(snap: Snapshot) -> list[str]:
    return [e.path for e in snap.entries]


def scan(root: Path, tmp_path: Path, **kwargs: object) -> Snapshot:
    return snapshot(root, cache_dir=tmp_path / "hash-cache", **kwargs)  # type: ignore[arg-type]


def test_gitignore_rules_at_every_level(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "proj", RULES_TREE)
    assert paths(scan(root, tmp_path, with_git=False)) == RULES_SENT


@needs_git
def test_the_files_are_those_git_sees(tmp_path: Path) -> None:
    """Differential check against git itself: the same tree, the same files (ignored ones and untracked alike)."""
    root = write_tree(tmp_path / "proj", RULES_TREE)
    git(root, "init", "-q")
    seen_by_git = sorted(git(root, "ls-files", "--cached", "--others", "--exclude-standard").splitlines())
    assert seen_by_git == RULES_SENT
    assert paths(scan(root, tmp_path)) == seen_by_git


def test_tensorfleetignore_adds_rules_after_gitignore(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "proj",
        {
            ".gitignore": "*.ckpt\n",
            ".tensorfleetignore": "datasets/\n!best.ckpt\n",
            "best.ckpt": "re-included by .tensorfleetignore\n",
            "last.ckpt": "ignored by .gitignore\n",
            "datasets/train.csv": "ignored by .tensorfleetignore\n",
            "sub/.tensorfleetignore": "*.png\n",
            "sub/plot.png": "ignored one level down\n",
            "plot.png": "the nested rule does not reach up here\n",
            "main.py": "",
        },
    )
    assert paths(scan(root, tmp_path)) == [
        ".gitignore",
        ".tensorfleetignore",
        "best.ckpt",
        "main.py",
        "plot.png",
        "sub/.tensorfleetignore",
    ]


def test_git_folders_virtualenvs_and_pycache_are_never_sent(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "proj",
        {
            # negations cannot bring them back
            ".gitignore": "!__pycache__/\n!.venv/\n",
            "main.py": "",
            ".git/config": "[core]\n",
            ".venv/lib/site.py": "",
            "venv/bin/python": "",
            "envs/py311/pyvenv.cfg": "home = /usr/bin\n",
            "envs/py311/lib/x.py": "",
            "envs/conda/conda-meta/history": "",
            "envs/conda/bin/python": "",
            "envs/notes.md": "an ordinary file next to the envs\n",
            "pkg/__pycache__/mod.cpython-311.pyc": b"\x00",
            "pkg/mod.py": "",
            "sub/.git": "gitdir: ../.git/worktrees/sub\n",
        },
    )
    outside_env = write_tree(tmp_path / "elsewhere" / "env", {"pyvenv.cfg": "home = /usr/bin\n"})
    (root / "pkg" / "venv").symlink_to(outside_env)  # a link to an env elsewhere is neither sent nor an escape
    (root / "pkg" / "env311").symlink_to(outside_env)
    assert paths(scan(root, tmp_path)) == [".gitignore", "envs/notes.md", "main.py", "pkg/mod.py"]


def test_rules_of_the_enclosing_repository_apply_to_a_subfolder(tmp_path: Path) -> None:
    repo = write_tree(
        tmp_path / "repo",
        {
            ".git/info/exclude": "*.secret\n",
            ".gitignore": "*.out\n/proj/local.cfg\n",
            "proj/a.py": "",
            "proj/run.out": "ignored by the repository's top .gitignore\n",
            "proj/local.cfg": "anchored in the top .gitignore\n",
            "proj/key.secret": "ignored by .git/info/exclude\n",
            "proj/nested/local.cfg": "kept: the anchor is proj/local.cfg\n",
        },
    )
    assert paths(scan(repo / "proj", tmp_path, with_git=False)) == ["a.py", "nested/local.cfg"]


def test_a_folder_the_repository_ignores_is_taken_on_its_own_rules(tmp_path: Path) -> None:
    repo = write_tree(
        tmp_path / "repo",
        {
            ".git/HEAD": "ref: refs/heads/main\n",
            ".gitignore": "scratch/\n*.out\n",
            "scratch/exp/train.py": "",
            "scratch/exp/run.out": "the repository's rules do not reach an ignored folder\n",
            "scratch/exp/.gitignore": "*.ckpt\n",
            "scratch/exp/last.ckpt": "its own rules still apply\n",
        },
    )
    assert paths(scan(repo / "scratch" / "exp", tmp_path, with_git=False)) == [".gitignore", "run.out", "train.py"]


def test_a_folder_with_nothing_to_send_is_refused(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "proj", {".venv/pyvenv.cfg": "", "__pycache__/a.pyc": "", ".tensorfleetignore": "*\n"})
    with pytest.raises(ProjectError, match="has no file to send: every file in it is ignored"):
        scan(root, tmp_path)


def test_an_ignored_large_file_is_neither_counted_nor_read(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "proj", {".gitignore": "/weights/\n", "train.py": "print(1)\n"})
    (root / "weights").mkdir()
    with (root / "weights" / "model.bin").open("wb") as fh:
        fh.truncate(300 * MiB)  # sparse: over the 200 MiB default without writing it
    snap = scan(root, tmp_path)
    assert paths(snap) == [".gitignore", "train.py"]
    assert snap.bytes == len("/weights/\n") + len("print(1)\n")


def test_over_the_limit_is_refused_up_front_naming_the_largest_files(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "proj", {"train.py": "print(1)\n"})
    sizes = {"a.bin": 40, "b.bin": 70, "c.bin": 10, "d/e.bin": 90, "f.bin": 20, "g.bin": 30}
    for rel, mib in sizes.items():
        (root / rel).parent.mkdir(exist_ok=True)
        with (root / rel).open("wb") as fh:
            fh.truncate(mib * MiB)
    with pytest.raises(ProjectError) as caught:
        scan(root, tmp_path)
    message = str(caught.value)
    assert "over the limit of 200.0 MiB" in message
    assert "d/e.bin (90.0 MiB), b.bin (70.0 MiB), a.bin (40.0 MiB), g.bin (30.0 MiB), f.bin (20.0 MiB)" in message
    assert "c.bin" not in message and ".tensorfleetignore" in message and "--max-project-size" in message
    assert "largest folders: d/ (90.0 MiB in 1 files)" in message
    assert caught.value.problems == ("d/e.bin", "b.bin", "a.bin", "g.bin", "f.bin")
    assert not (tmp_path / "hash-cache").exists()  # refused before any file was read
    (root / ".tensorfleetignore").write_text("*.bin\n")  # the advice, followed
    assert paths(scan(root, tmp_path)) == [".tensorfleetignore", "train.py"]


def test_many_small_files_are_explained_by_their_folders(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {f"images/{i:03d}.png": b"\x89PNG" + bytes(1000) for i in range(40)}
    files |= {f"labels/{i:03d}.txt": "cat\n" for i in range(12)}
    root = write_tree(tmp_path / "proj", {**files, "train.py": "print(1)\n"})
    with pytest.raises(ProjectError) as caught:
        scan(root, tmp_path, max_bytes=20_000)
    assert "largest folders: images/ (39.2 KiB in 40 files), labels/ (48 B in 12 files)" in str(caught.value)
    with pytest.raises(ProjectError) as caught:
        scan(root, tmp_path, max_files=50)
    message = str(caught.value)
    assert "holds 53 files, over the limit of 50" in message
    assert "folders with the most files: images/ (40 files), labels/ (12 files)" in message
    assert caught.value.problems == ("images/", "labels/")
    assert not (tmp_path / "hash-cache").exists()  # refused before any file was read


def test_symlinks_inside_are_followed_and_links_that_leave_are_refused(tmp_path: Path) -> None:
    outside = write_tree(tmp_path / "outside", {"secret.txt": "not part of the project\n"})
    root = write_tree(tmp_path / "proj", {"configs/v2/lr.yaml": "lr: 3e-4\n", "main.py": ""})
    (root / "current.yaml").symlink_to("configs/v2/lr.yaml")
    (root / "configs" / "latest").symlink_to("v2")
    snap = scan(root, tmp_path)
    assert paths(snap) == ["configs/latest/lr.yaml", "configs/v2/lr.yaml", "current.yaml", "main.py"]
    assert len({e.sha256 for e in snap.entries if e.path.endswith(".yaml")}) == 1

    (root / "leak.txt").symlink_to(outside / "secret.txt")
    (root / "ext").symlink_to(outside)
    with pytest.raises(ProjectError) as caught:
        scan(root, tmp_path)
    message = str(caught.value)
    assert "symlinks that leave the project" in message
    assert f"leak.txt -> {outside / 'secret.txt'}" in message and f"ext -> {outside}" in message

    (root / ".tensorfleetignore").write_text("/leak.txt\n/ext\n")
    assert paths(scan(root, tmp_path))[0] == ".tensorfleetignore"  # ignored links are never followed


def test_broken_links_and_link_loops_are_refused(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "proj", {"a/x.py": "", "b/y.py": ""})
    (root / "gone.txt").symlink_to("nowhere.txt")
    (root / "a" / "to_b").symlink_to("../b")
    (root / "b" / "to_a").symlink_to("../a")
    with pytest.raises(ProjectError) as caught:
        scan(root, tmp_path)
    message = str(caught.value)
    assert "broken symlinks: gone.txt -> nowhere.txt" in message
    assert "symlink loops: a/to_b/to_a -> ../a" in message


def test_a_missing_folder_a_file_and_unreadable_files_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ProjectError, match="does not exist"):
        scan(tmp_path / "nope", tmp_path)
    root = write_tree(tmp_path / "proj", {"ok.py": "", "locked.py": "x"})
    with pytest.raises(ProjectError, match="is not a folder"):
        scan(root / "ok.py", tmp_path)
    real_digest = file_digest

    def digest(path: Path) -> tuple[str, int]:
        if path.name == "locked.py":  # tests run as root here, where chmod 000 does not stop a read
            raise PermissionError(13, "Permission denied", str(path))
        return real_digest(path)

    monkeypatch.setattr(scan_module, "file_digest", digest)
    with pytest.raises(ProjectError, match=r"cannot be read: locked\.py \(Permission denied\)"):
        scan(root, tmp_path, use_cache=False)


def test_the_manifest_identifies_the_content(tmp_path: Path) -> None:
    one = write_tree(tmp_path / "one", {"run.sh": "#!/bin/sh\n", "a/b.py": "x = 1\n"})
    two = write_tree(tmp_path / "two", {"run.sh": "#!/bin/sh\n", "a/b.py": "x = 1\n"})
    first, second = scan(one, tmp_path), scan(two, tmp_path)
    assert first.id == second.id == manifest_id(first.entries)
    assert first.entries[0] == ManifestEntry("a/b.py", MODE_FILE, hashlib.sha256(b"x = 1\n").hexdigest(), 6)
    (two / "run.sh").chmod(0o755)
    executable = scan(two, tmp_path)
    assert [e.mode for e in executable.entries] == [MODE_FILE, MODE_EXECUTABLE]
    assert executable.id != first.id
    assert parse_manifest(json.loads(json.dumps(executable.manifest()))) == executable.entries


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/etc/passwd", "absolute path"),
        ("C:/x.py", "absolute path"),
        ("../up.py", "holds '..'"),
        ("a/../../up.py", "holds '..'"),
        ("a//b.py", "empty or '.'"),
        ("./a.py", "empty or '.'"),
        ("a\\..\\b.py", "backslash"),
        ("a\nb.py", "control character"),
        ("", "is empty"),
        ("a/" + "x" * 256 + ".py", "component over 255 bytes"),
        ("bad\udcff.py", "not valid UTF-8"),
    ],
)
def test_validate_manifest_refuses_paths_that_leave_the_folder(path: str, problem: str) -> None:
    entries = [ManifestEntry("ok.py", MODE_FILE, SHA_A, 1), ManifestEntry(path, MODE_FILE, SHA_A, 1)]
    with pytest.raises(ValidationError, match=problem) as caught:
        validate_manifest(entries)
    assert caught.value.field == "manifest[1].path"


def test_validate_manifest_refuses_malformed_entries() -> None:
    def refused(entries: list[ManifestEntry], field: str, problem: str) -> None:
        with pytest.raises(ValidationError, match=problem) as caught:
            validate_manifest(entries)
        assert caught.value.field == field

    refused([ManifestEntry("a", 0o777, SHA_A, 1)], "manifest[0].mode", "only 0o644 and 0o755")
    refused([ManifestEntry("a", MODE_FILE, "ABC", 1)], "manifest[0].sha256", "64 lowercase hex")
    refused([ManifestEntry("a", MODE_FILE, SHA_A, -1)], "manifest[0].size", "at least 0")
    refused([ManifestEntry("a", MODE_FILE, SHA_A, 1)] * 2, "manifest", "lists 'a' twice")
    both = [ManifestEntry("a", MODE_FILE, SHA_A, 1), ManifestEntry("a.txt", MODE_FILE, SHA_A, 1)]
    refused([*both, ManifestEntry("a/b", MODE_FILE, SHA_A, 1)], "manifest", "'a' is a file and also the directory")
    with pytest.raises(ValidationError, match="holds more than 1 files"):
        validate_manifest(both, max_files=1)
    with pytest.raises(ValidationError, match="only 0o644 and 0o755"):
        parse_manifest([{"path": "a", "mode": 420.0, "sha256": SHA_A, "size": 1}])
    with pytest.raises(ValidationError, match="is a str, not a list"):
        parse_manifest("a")
    with pytest.raises(ValidationError, match="unknown keys"):
        parse_manifest([{"path": "a", "mode": MODE_FILE, "sha256": SHA_A, "size": 1, "x": 1}])
    with pytest.raises(ValidationError, match=r"holds '\.\.'"):
        parse_manifest([{"path": "../a", "mode": MODE_FILE, "sha256": SHA_A, "size": 1}])
    assert validate_manifest(reversed(both)) == tuple(both)  # sorted by path


def test_only_what_the_controller_lacks_is_uploaded(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "proj",
        {"train.py": "lr = 0.1\nepochs = 3\n", "model.py": "class M: ...\n", "copy/model.py": "class M: ...\n"},
    )
    first = scan(root, tmp_path)
    plan = first.plan_upload(set())
    assert plan.as_json() == {"files": 3, "bytes": first.bytes, "uploaded_bytes": first.bytes - 13}
    assert [e.path for e in plan.send] == ["copy/model.py", "train.py"]  # the same content is sent once
    assert plan.uploaded_files == 2
    stored = {e.sha256 for e in plan.send}

    unchanged = scan(root, tmp_path)
    assert unchanged.id == first.id
    assert unchanged.missing(stored) == []
    assert unchanged.plan_upload(stored).as_json()["uploaded_bytes"] == 0

    (root / "train.py").write_text("lr = 0.3\nepochs = 3\n")  # a one-line change
    changed = scan(root, tmp_path)
    assert changed.id != first.id
    missing = changed.missing(stored)
    assert [e.path for e in missing] == ["train.py"]
    assert changed.plan_upload(stored).uploaded_bytes == len("lr = 0.3\nepochs = 3\n")
    assert changed.local_path(missing[0]).read_text() == "lr = 0.3\nepochs = 3\n"


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """A short racy window, and a wait past it: files written before the call may be remembered by the cache."""
    monkeypatch.setattr(hash_cache, "RACY_SECONDS", 0.2)
    return lambda: time.sleep(0.25)


def test_an_unchanged_project_is_rescanned_without_hashing(tmp_path: Path, settled: Callable[[], None]) -> None:
    root = generate_project(tmp_path / "proj", files=300, size=512)
    settled()
    cold = scan(root, tmp_path)
    assert cold.hashed_files == 300 and cold.scan_seconds > 0
    warm = scan(root, tmp_path)
    assert (warm.hashed_files, warm.id) == (0, cold.id)

    # same size, content changed, mtime put back: the ctime still tells
    target = root / "pkg07" / "mod00007.py"
    before = target.stat()
    target.write_text(target.read_text().replace("VALUE_7", "VALUE_X"))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = scan(root, tmp_path)
    assert after.hashed_files == 1
    assert [e.path for e in after.missing(cold.blobs())] == ["pkg07/mod00007.py"]
    assert scan(root, tmp_path).hashed_files == 1  # changed a moment ago: not remembered yet
    settled()
    assert scan(root, tmp_path).hashed_files == 1  # hashed once more, now remembered
    assert scan(root, tmp_path).hashed_files == 0


def test_a_damaged_cache_is_ignored(tmp_path: Path, settled: Callable[[], None]) -> None:
    root = write_tree(tmp_path / "proj", {"a.py": "a\n"})
    settled()
    first = scan(root, tmp_path)
    cache_file = HashCache(tmp_path / "hash-cache", str(root.resolve())).path
    assert cache_file.exists()
    cache_file.write_text('{"version": 1, "root": "' + str(root.resolve()) + '", "files": {"a.py": [1]}}')
    again = scan(root, tmp_path)
    assert (again.hashed_files, again.id) == (1, first.id)


@needs_git
def test_git_state_of_a_dirty_repository(tmp_path: Path) -> None:
    repo = write_tree(
        tmp_path / "repo",
        {".gitignore": "*.log\n", "proj/train.py": "lr = 0.1\n", "proj/model.py": "M = 1\n", "other.py": "o\n"},
    )
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "remote", "add", "origin", "https://user:s3cret@git.example.invalid/team/repo.git")
    commit = git(repo, "rev-parse", "HEAD").strip()

    clean = git_info(repo / "proj")
    assert clean is not None
    assert (clean.commit, clean.branch, clean.dirty, clean.diff, clean.subdir) == (commit, "main", False, "", "proj")
    assert clean.remote == "https://git.example.invalid/team/repo.git"

    (repo / "proj" / "train.py").write_text("lr = 0.3\n")
    (repo / "proj" / "new.py").write_text("new\n")
    (repo / "proj" / "run.log").write_text("ignored\n")
    (repo / "other.py").write_text("changed outside DIR\n")
    snap = scan(repo / "proj", tmp_path)
    info = snap.git
    assert info is not None and info.dirty and not info.diff_truncated
    assert "-lr = 0.1\n+lr = 0.3" in info.diff and "other.py" not in info.diff
    assert info.untracked == ("proj/new.py",)
    assert json.loads(json.dumps(info.as_dict()))["commit"] == commit

    capped = git_info(repo / "proj", diff_limit=40)
    assert capped is not None and capped.diff_truncated and len(capped.diff) <= 40

    git(repo, "checkout", "-q", "--detach")
    detached = git_info(repo)
    assert detached is not None and detached.branch == "" and detached.subdir == ""


@needs_git
def test_a_repository_without_commits_and_a_folder_outside_any(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_tree(tmp_path / "fresh", {"a.py": ""})
    git(root, "init", "-q")
    info = git_info(root)
    assert info is not None and info.commit == "" and info.dirty and info.untracked == ("a.py",)
    plain = write_tree(tmp_path / "plain", {"a.py": ""})
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert git_info(plain) is None


def test_no_git_executable_means_no_git_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_tree(tmp_path / "proj", {"a.py": ""})
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert scan(root, tmp_path).git is None


def test_hashes_are_remembered_in_the_users_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settled: Callable[[], None]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = write_tree(tmp_path / "proj", {"a.py": "a\n"})
    settled()
    snapshot(root, with_git=False)
    (cache_file,) = (tmp_path / "xdg" / "tensorfleet" / "project-hashes").iterdir()
    assert json.loads(cache_file.read_text())["files"]["a.py"][-1] == hashlib.sha256(b"a\n").hexdigest()
    assert oct(cache_file.parent.stat().st_mode & 0o777) == "0o700"


def test_the_snapshot_loads_no_controller_store_qt_or_grpc() -> None:
    """The SDK, CLI and GUI snapshot a folder before talking to anyone: none of those layers come with it."""
    code = "import json, sys; import tensorfleet_desktop.project; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    forbidden = ("tensorfleet_desktop.controller", "sqlite3", "PySide6", "grpc", "google.protobuf")
    assert "tensorfleet_desktop.project.scan" in loaded
    assert [m for m in loaded if m.startswith(forbidden)] == []
