"""A download that arrives damaged is data loss (exit code 5), not a refused request, for models and artifacts."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_desktop.client import Client, DataLoss

GOOD = b"the bytes the controller meant to send " * 100


class _Stub:
    """Streams a header that promises GOOD, then other bytes (a transfer damaged on its way)."""

    def DownloadArtifact(self, request: Any, **_kw: Any) -> Any:
        header = cpb.Artifact(name=request.name, sha256=hashlib.sha256(GOOD).hexdigest(), size=len(GOOD))
        return iter([cpb.ArtifactChunk(header=header), cpb.ArtifactChunk(data=GOOD[:-1] + b"?")])

    def DownloadModel(self, request: Any, **_kw: Any) -> Any:
        header = cpb.ModelDownloadHeader(sha256=hashlib.sha256(GOOD).hexdigest(), size=len(GOOD))
        return iter([cpb.ModelChunk(header=header), cpb.ModelChunk(data=GOOD[:-1] + b"?")])


@pytest.fixture
def client() -> Client:
    client = Client.__new__(Client)
    client.address, client.timeout, client._metadata = "127.0.0.1:1", 5.0, ()
    client._stub = _Stub()  # type: ignore[assignment]
    return client


def test_a_damaged_artifact_download_is_data_loss_and_leaves_no_file(client: Client, tmp_path: Path) -> None:
    with pytest.raises(DataLoss, match="arrived damaged"):
        client.download_artifact("j1", "model.skops", tmp_path / "out.skops")
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_model_download_is_data_loss_and_leaves_no_file(client: Client, tmp_path: Path) -> None:
    with pytest.raises(DataLoss, match="arrived damaged"):
        client.download_model("m:1", tmp_path / "m.skops")
    assert list(tmp_path.iterdir()) == []
