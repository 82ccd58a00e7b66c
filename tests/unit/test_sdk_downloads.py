"""A download that arrives damaged is data loss (exit code 5), not a refused request, for models and artifacts,
through the blocking Client (AsyncClient's one copy of the download, run on its loop)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tensorfleet_agent._generated import controller_pb2 as cpb
from tensorfleet_desktop.client import AsyncClient, Client, DataLoss

GOOD = b"the bytes the controller meant to send " * 100


class _Stub:
    """Streams a header that promises GOOD, then other bytes (a transfer damaged on its way)."""

    async def DownloadArtifact(self, request: Any, **_kw: Any) -> AsyncIterator[cpb.ArtifactChunk]:
        header = cpb.Artifact(name=request.name, sha256=hashlib.sha256(GOOD).hexdigest(), size=len(GOOD))
        yield cpb.ArtifactChunk(header=header)
        yield cpb.ArtifactChunk(data=GOOD[:-1] + b"?")

    async def DownloadModel(self, request: Any, **_kw: Any) -> AsyncIterator[cpb.ModelChunk]:
        header = cpb.ModelDownloadHeader(sha256=hashlib.sha256(GOOD).hexdigest(), size=len(GOOD))
        yield cpb.ModelChunk(header=header)
        yield cpb.ModelChunk(data=GOOD[:-1] + b"?")


class _Connected(AsyncClient):
    """An AsyncClient already connected, to the stub (no controller, no socket)."""

    async def connect(self) -> None:
        self._stub_ = _Stub()


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    monkeypatch.setattr("tensorfleet_desktop.client.sync.AsyncClient", _Connected)
    with Client("127.0.0.1:1", 5.0) as client:
        yield client


def test_a_damaged_artifact_download_is_data_loss_and_leaves_no_file(client: Client, tmp_path: Path) -> None:
    with pytest.raises(DataLoss, match="arrived damaged"):
        client.download_artifact("j1", "model.skops", tmp_path / "out.skops")
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_model_download_is_data_loss_and_leaves_no_file(client: Client, tmp_path: Path) -> None:
    with pytest.raises(DataLoss, match="arrived damaged"):
        client.download_model("m:1", tmp_path / "m.skops")
    assert list(tmp_path.iterdir()) == []
