"""The image workload on an uploaded dataset version (issue 20): a folder of class_name/*.png|*.jpg uploaded
with the client; a two-rank image_classifier job naming it reads it at TENSORFLEET_DATASET_DIR on both agents,
learns it, keeps the ranks' weights equal and registers a model that loads as a torch module."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json
from tensorfleet_desktop.client import Client
from tensorfleet_desktop.project import hash_cache

pytestmark = pytest.mark.slow
pytest.importorskip("torch")
pytest.importorskip("PIL")


@pytest.fixture(autouse=True)
def _own_hash_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # never the user's hash cache
    monkeypatch.setattr(hash_cache, "RACY_SECONDS", 0.0)


def test_image_classifier_trains_on_an_uploaded_image_folder(
    shared_cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path: Path
) -> None:
    from tensorfleet_agent.workloads.shapes import generate

    controller, _ = shared_cluster
    generate(tmp_path / "shapes", per_class=24, size=24, classes=3, seed=1)
    with Client(controller.address) as client:
        version = client.upload_dataset_version(tmp_path / "shapes", "shapes")
    params = {"epochs": 3, "image_size": 24, "width": 8, "batch_size": 8}
    args = [arg for key, value in params.items() for arg in ("--param", f"{key}={value}")]
    job = cli_json(
        controller.cli(
            "submit",
            "--algorithm",
            "image_classifier",
            "--dataset",
            "shapes",
            "--workers",
            "2",
            *args,
            "--model-name",
            "shapes-cnn",
            "--wait",
            "--json",
            timeout=300,
        )
    )
    assert job["state"] == "SUCCEEDED", job
    with Client(controller.address) as client:
        detail = client.job(job["id"])
        lines = [r["line"] for r in client.logs(job["id"])]
        module = client.load_model("shapes-cnn")  # registered; its model.json rebuilds the residual network
    import torch

    assert module(torch.rand(2, 3, 24, 24)).shape == (2, 3)
    assert sorted(a["kind"] for a in detail["artifacts"]) == ["model", "model_config"]  # rank 0 alone saved it
    assert detail["spec"]["dataset_version"]["content_id"] == version["content_id"]
    assert sum("72 images in 3 classes under" in line for line in lines) == 2, lines  # each rank read the folder
    assert detail["metrics"]["test_accuracy"] > 0.5
    checksums = [t["metrics"]["param_checksum"] for t in detail["task_list"]]
    assert checksums[0] == checksums[1]
