"""Versions exchanged between peers, and installed packages' versions read without importing importlib.metadata."""

from __future__ import annotations

import os
import re
import sys

#: Bumped on every incompatible change to proto/tensorfleet/v1.
# 7: AgentService.Tasks (a controller's watches on one stream); 6: WatchTask's acceptance carries the first
# events; 5: WatchTaskRequest.run (start a task and follow it in one call); 4: TaskSpec.trials
PROTOCOL_VERSION = 7


class _Unsure(Exception):
    """The quick search cannot tell what importlib.metadata would find (a zip on sys.path, an unreadable record)."""


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower().replace("-", "_")  # importlib.metadata's Prepared.normalize


def _version_in(folder: str) -> str:
    for record in ("METADATA", "PKG-INFO"):  # what importlib.metadata's PathDistribution reads, in this order
        try:
            with open(os.path.join(folder, record), encoding="utf-8") as fh:
                for line in fh:
                    if not line.strip():
                        break  # the end of the headers
                    key, sep, value = line.partition(":")
                    if sep and key.strip().lower() == "version":
                        return value.strip()
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError):
            raise _Unsure from None
        raise _Unsure  # a record without a version
    raise _Unsure


def _search(name: str) -> str | None:
    """What importlib.metadata.version(name) returns, searched the same way (the first .dist-info or .egg-info
    folder of that name in the first sys.path directory holding one); None when no directory holds one."""
    wanted = _normalized(name)
    for entry in sys.path:
        root = entry or "."
        try:
            children = os.listdir(root)
        except OSError:
            if os.path.isfile(root):  # a zip: importlib.metadata looks inside
                raise _Unsure from None
            continue  # missing or unreadable: importlib.metadata finds nothing there either
        if os.path.basename(root).lower().endswith(".egg"):
            raise _Unsure  # an egg's EGG-INFO: another rule
        for child in children:  # in listdir order, as importlib.metadata takes them
            low = child.lower()
            if not low.endswith((".dist-info", ".egg-info")):
                continue
            if _normalized(low.rpartition(".")[0].partition("-")[0]) == wanted:
                return _version_in(os.path.join(root, child))
    return None


def installed_version(name: str) -> str | None:
    """The installed distribution's version, None when it is not installed. Reading the folders directly spares
    importlib.metadata (with its email parser, a tenth of an agent's start-up): every process (controller, agent,
    fork server, worker) reads a version at start. importlib.metadata answers when the quick search cannot tell."""
    try:
        return _search(name)
    except _Unsure:
        pass
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


AGENT_VERSION = installed_version("tensorfleet") or "0.0.0+source"  # "+source": a source tree without an install
