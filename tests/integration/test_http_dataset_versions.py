"""Dataset versions over the HTTP API (issue 20), the operations gRPC has: ask which blobs are missing, PUT each
(checked), commit the manifest as version 1 (201) or unchanged (200), page the tree, add a file:// reference, and
delete NAME:VERSION."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from helpers.controller import ControllerProcess
from helpers.http_api import HttpApi
from tensorfleet_agent.core.manifest import ManifestEntry, manifest_bytes, manifest_id

pytestmark = pytest.mark.slow
Cluster = tuple[ControllerProcess, list[object]]


def test_a_tree_uploaded_committed_paged_and_deleted_over_http(http_cluster: Cluster, tmp_path: Path) -> None:
    api = HttpApi.of(http_cluster[0])
    files = {"a/1.txt": b"one", "a/2.txt": b"two", "b.txt": b"bee"}
    entries = [ManifestEntry(p, 0o644, hashlib.sha256(d).hexdigest(), len(d)) for p, d in files.items()]
    blobs = {e.sha256: files[e.path] for e in entries} | {manifest_id(entries): manifest_bytes(entries)}
    missing = api.ok("POST", "datasets/blobs/missing", json={"sha256": list(blobs)})["missing"]
    assert set(missing) == set(blobs)
    bad = api.request("PUT", f"datasets/blobs/{entries[0].sha256}", data=b"nope")
    assert bad.status_code == 422 and "hashes to" in bad.json()["detail"]
    for sha in missing:
        assert api.request("PUT", f"datasets/blobs/{sha}", data=blobs[sha]).status_code == 204
    assert api.ok("POST", "datasets/blobs/missing", json={"sha256": list(blobs)})["missing"] == []
    made = api.post("datasets/web/versions", json={"manifest_id": manifest_id(entries)})
    assert made.status_code == 201 and (made.json()["version"], made.json()["files"]) == (1, 3)
    again = api.post("datasets/web/versions", json={"manifest_id": manifest_id(entries)})
    assert again.status_code == 200 and again.json()["unchanged"]
    page = api.ok("GET", "datasets/web/files", params={"prefix": "a", "limit": 1})
    assert [f["path"] for f in page["files"]] == ["a/1.txt"] and page["next_cursor"] == "a/1.txt"
    rest = api.ok("GET", "datasets/web:1/files", params={"prefix": "a", "cursor": page["next_cursor"]})
    assert [f["path"] for f in rest["files"]] == ["a/2.txt"] and rest["next_cursor"] == ""
    share = tmp_path / "share"
    share.mkdir()
    (share / "x.txt").write_text("x")
    ref = api.post("datasets/web/references", json={"url": f"file://{share}"})
    assert ref.status_code == 201 and (ref.json()["version"], ref.json()["source"]) == (2, "file")
    assert [v["version"] for v in api.ok("GET", "datasets/web")["versions"]] == [1, 2]
    assert [v["version"] for v in api.ok("DELETE", "datasets/web:1")["versions"]] == [1]
    assert [v["version"] for v in api.ok("GET", "datasets/web")["versions"]] == [2]
    assert api.delete("datasets/web:1").status_code == 404
    assert api.ok("DELETE", "datasets/web")["name"] == "web"
    assert api.get("datasets/web").status_code == 404
