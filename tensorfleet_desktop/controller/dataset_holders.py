"""Which agents hold which dataset blobs (issue 20, peer-to-peer transfer): what dispatch names as a reader's peers.

Learned from what the controller sees, never asked for on its own: a blob it pushed (held from then on), HasBlobs
answers (held or no longer held: evicted), an agent's DatasetTransfer event (it mounted the version, so it holds
every blob of it: a chunk as a byte range of its assembled file) and its cache listing (GetAgentCache: the
versions it holds now, the others forgotten). A removed agent is forgotten; a LOST one is skipped by the caller
(only online agents are offered as peers). The index is a hint: a peer that turns out not to hold a blob fails
that blob, the reader re-queues it to another holder, and a task left without one fails SETUP and is pushed on
its retry.
"""

from __future__ import annotations

from collections.abc import Iterable


class Holders:
    def __init__(self) -> None:
        self._blobs: dict[str, set[str]] = {}  # node id -> blob sha256s it holds
        self._versions: dict[str, set[str]] = {}  # node id -> content ids of versions it holds whole

    def saw(self, node: str, have: Iterable[str], lacks: Iterable[str] = ()) -> None:
        """A HasBlobs answer, or blobs pushed to the agent: `have` held, `lacks` not (nor any version naming it)."""
        held = self._blobs.setdefault(node, set())
        held.update(have)
        gone = set(lacks)
        if gone:
            held.difference_update(gone)
            versions = self._versions.get(node)
            if versions and versions & gone:  # its manifest is gone: the tree was evicted
                versions.difference_update(gone)

    def holds_version(self, node: str, content_id: str) -> None:
        """The agent mounted the version: it holds all of it."""
        self._versions.setdefault(node, set()).add(content_id)

    def cache_listed(self, node: str, content_ids: Iterable[str]) -> None:
        """The agent's cache listing: exactly these versions are materialized there now."""
        self._versions[node] = set(content_ids)

    def forget(self, node: str) -> None:
        self._blobs.pop(node, None)
        self._versions.pop(node, None)

    def holders(self, sha256: str, content_id: str, whole: str = "") -> set[str]:
        """The agents holding `sha256` of version `content_id` (`whole`: the file a chunk belongs to)."""
        return {
            node
            for node in self._blobs.keys() | self._versions.keys()
            if content_id in self._versions.get(node, ())
            or sha256 in self._blobs.get(node, ())
            or (whole and whole in self._blobs.get(node, ()))
        }

    def version_holders(self, content_id: str) -> set[str]:
        """The agents holding the whole version (placement prefers them)."""
        return {node for node, versions in self._versions.items() if content_id in versions}


def spread(holders_of: dict[str, list[str]], sizes: dict[str, int], per_blob: int = 3) -> dict[str, list[str]]:
    """node -> the blobs it is named for, each blob given to at most `per_blob` of its holders, the least loaded
    (in bytes named so far) first, so readers' downloads spread over the holders instead of all asking one."""
    load: dict[str, int] = {}
    out: dict[str, list[str]] = {}
    for sha in sorted(holders_of, key=lambda s: -sizes.get(s, 0)):  # big blobs first: the best balance
        chosen = sorted(holders_of[sha], key=lambda n: (load.get(n, 0), n))[:per_blob]
        for rank, node in enumerate(chosen):
            if rank == 0:  # the first is the one the reader tries first
                load[node] = load.get(node, 0) + sizes.get(sha, 0)
            out.setdefault(node, []).append(sha)
    return out
