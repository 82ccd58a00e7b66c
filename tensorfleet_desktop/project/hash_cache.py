"""Known sha256s of a project's files, so an unchanged project is re-scanned without reading its files again.

One small JSON file per project folder under the user's cache dir, keyed by the file's path, size, mtime, ctime,
inode and device: any write, `touch`, `chmod`, copy or replace changes one of them (ctime cannot be set back). A
file whose ctime is less than `RACY_SECONDS` before it was hashed is not remembered (a change right after the
hash could keep the same timestamps: git's "racy clean" problem), so it is hashed again next time. A damaged or
foreign cache file is ignored, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import platformdirs

from tensorfleet_desktop.project.walk import FoundFile

CACHE_VERSION = 1
RACY_SECONDS = 1.0

_Key = tuple[int, int, int, int, int]


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("tensorfleet", appauthor=False)) / "project-hashes"


def _key(found: FoundFile) -> _Key:
    return (found.size, found.mtime_ns, found.ctime_ns, found.inode, found.device)


class HashCache:
    """The cache of one project root; `save` keeps only the files of the last scan, so it never grows stale."""

    def __init__(self, cache_dir: Path, root: str) -> None:
        self.root = root
        self.path = cache_dir / (hashlib.sha256(os.fsencode(root)).hexdigest()[:32] + ".json")
        self._known: dict[str, tuple[_Key, str]] = {}
        self._fresh: dict[str, tuple[_Key, str]] = {}
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != CACHE_VERSION or data.get("root") != self.root:
                return
            for path, (size, mtime, ctime, inode, device, sha) in data["files"].items():
                self._known[path] = ((int(size), int(mtime), int(ctime), int(inode), int(device)), str(sha))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            self._known = {}

    def lookup(self, found: FoundFile) -> str | None:
        known = self._known.get(found.path)
        if known is not None and known[0] == _key(found):
            self._fresh[found.path] = known
            return known[1]
        return None

    def remember(self, found: FoundFile, sha256: str, hashed_at_ns: int) -> None:
        if found.ctime_ns >= hashed_at_ns - int(RACY_SECONDS * 1e9):
            return
        self._fresh[found.path] = (_key(found), sha256)

    def save(self) -> None:
        """Write the entries of this scan (atomically); nothing is written when they equal what was loaded."""
        if self._fresh == self._known:
            return
        files = {path: [*key, sha] for path, (key, sha) in sorted(self._fresh.items())}
        text = json.dumps({"version": CACHE_VERSION, "root": self.root, "files": files}, separators=(",", ":"))
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # it names the user's files
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(text)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError:
            return  # a cache that cannot be written only costs the next scan its speed
        self._known = dict(self._fresh)
