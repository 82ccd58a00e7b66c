"""The model registry end to end: jobs register their models; the CLI and SDK list, alias, download and load them."""

from __future__ import annotations

import asyncio
import hashlib
import pickle
from pathlib import Path
from typing import Any

import pytest

from helpers.agents import AgentProcess
from helpers.controller import ControllerProcess, cli_json
from tensorfleet_agent.core.digest import file_sha256
from tensorfleet_desktop.client import AsyncClient, Client, NotFound

pytestmark = pytest.mark.slow


def test_jobs_register_versions_that_aliases_downloads_and_the_sdk_use(
    cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path: Path
) -> None:
    from sklearn.datasets import load_iris

    controller, _ = cluster
    with Client(controller.address) as client:
        # beside the forests, on the other agent: another model name, so it has no say in their versions
        unnamed_id = client.submit({"algorithm": "decision_tree", "dataset": "wine"})["id"]
        done = [  # one after the other: versions follow completion order
            client.wait(
                client.submit(
                    {
                        "algorithm": "random_forest",
                        "dataset": "iris",
                        "model_name": "iris-rf",
                        "hyperparameters": {"n_estimators": n},
                    }
                )["id"],
                timeout=120,
            )
            for n in (5, 40)
        ]
        unnamed = client.wait(unnamed_id, timeout=120)
    assert [j["state"] for j in done] == ["SUCCEEDED", "SUCCEEDED"]
    assert sorted(j["model"]["version"] for j in done) == [1, 2] and {j["model"]["name"] for j in done} == {"iris-rf"}
    assert unnamed["model"]["name"] == "decision_tree-wine" and unnamed["model"]["version"] == 1

    listed = cli_json(controller.cli("models", "list", "--name", "iris-rf", "--json"))
    assert listed["pagination"] == {"page": 1, "limit": 20, "total": 2, "pages": 1}
    item = listed["models"][0]
    assert set(item) == {
        *("name", "version", "algorithm", "metrics", "aliases", "tags", "size", "sha256", "created_at"),
        "blob_status",
    }
    assert item["blob_status"] == ""
    page = cli_json(controller.cli("models", "list", "--limit", "1", "--page", "2", "--json"))
    assert page["pagination"] == {"page": 2, "limit": 1, "total": 3, "pages": 3} and len(page["models"]) == 1

    shown = cli_json(controller.cli("models", "show", "iris-rf:2", "--json"))
    assert shown["hyperparameters"]["n_estimators"] == 40 and shown["dataset"]["name"] == "iris"
    assert shown["dataset"]["split_seed"] == 42 and shown["feature_names"][0] == "sepal length (cm)"
    assert shown["classes"] == ["setosa", "versicolor", "virginica"] and "scikit-learn" in shown["framework_versions"]
    assert shown["job_id"] == done[1]["id"] and shown["format"] == "skops"

    cli_json(controller.cli("models", "alias", "set", "iris-rf:1", "production", "--json"))
    cli_json(controller.cli("models", "tag", "iris-rf@production", "baseline", "--json"))
    cli_json(controller.cli("models", "describe", "iris-rf:1", "the first forest", "--json"))
    prod = cli_json(controller.cli("models", "show", "iris-rf@production", "--json"))
    assert (prod["version"], prod["aliases"], prod["tags"]) == (1, ["production"], ["baseline"])
    assert prod["description"] == "the first forest"
    assert [
        m["version"] for m in cli_json(controller.cli("models", "list", "--tag", "baseline", "--json"))["models"]
    ] == [1]
    floor = cli_json(controller.cli("models", "list", "--min-metric", "test_accuracy=0.99", "--json"))["models"]
    assert all(m["metrics"]["test_accuracy"] >= 0.99 for m in floor)

    # download in the stored format: the bytes hash to the sha256 `show` promised
    target = tmp_path / "iris.skops"
    cli_json(controller.cli("models", "download", "iris-rf@production", "-o", str(target), "--json"))
    assert hashlib.sha256(target.read_bytes()).hexdigest() == prod["sha256"]
    exported = tmp_path / "iris.onnx"
    controller.cli("models", "download", "iris-rf:1", "-o", str(exported), "--format", "onnx", "--json")
    import onnx

    onnx.checker.check_model(onnx.load(str(exported)))
    pickled = tmp_path / "iris.pkl"
    controller.cli("models", "download", "iris-rf:1", "-o", str(pickled), "--format", "pickle", "--json")
    x, y = load_iris(return_X_y=True)
    with Client(controller.address) as client:
        model = client.load_model("iris-rf@production")
        assert (model.predict(x) == pickle.loads(pickled.read_bytes()).predict(x)).all()
        assert (model.predict(x) == y).mean() > 0.9
        stats = client.model_stats()
    assert stats["total_models"] == 3
    assert {r["algorithm"]: r["count"] for r in stats["algorithm_stats"]} == {"random_forest": 2, "decision_tree": 1}

    async def from_the_loop() -> tuple[dict[str, Any], dict[str, Any]]:
        async with AsyncClient(controller.address) as aclient:  # what the desktop app uses
            return await aclient.models(name="iris-rf", limit=1), await aclient.model("iris-rf@production")

    first_page, production = asyncio.run(from_the_loop())
    assert first_page["pagination"]["pages"] == 2 and production["version"] == 1
    compared = cli_json(controller.cli("models", "compare", "iris-rf:1", "iris-rf:2", "--json"))
    assert {"section": "hyperparameters", "key": "n_estimators", "a": 5, "b": 40} in compared["rows"]

    # deleting what an alias points at needs --force; refs that do not resolve are named
    refused = controller.cli("models", "delete", "iris-rf:1")
    assert refused.returncode == 2 and "@production" in refused.stderr
    blob = controller.data_dir / "blobs" / shown["sha256"][:2] / shown["sha256"]
    assert blob.exists()
    assert controller.cli("models", "delete", "iris-rf:2").returncode == 0
    freed = cli_json(controller.cli("gc", "--grace", "0", "--json"))
    assert freed["deleted"] >= 1 and freed["freed_bytes"] >= shown["size"]
    assert not blob.exists()  # the deleted version's file is gone; the others stay
    assert cli_json(controller.cli("models", "download", "iris-rf:1", "-o", str(tmp_path / "v1"), "--json"))
    for ref, message in [
        ("iris-rf:2", "no model 'iris-rf:2'"),
        ("iris-rf@staging", "no such alias"),
        ("iris rf", "is not NAME, NAME:VERSION or NAME@ALIAS"),
        ("iris-rf:zero", "must be a positive integer"),
    ]:
        result = controller.cli("models", "show", ref)
        assert result.returncode == 2 and message in result.stderr, (ref, result.stderr)
    result = controller.cli("models", "download", "iris-rf:1", "-o", str(tmp_path / "x"), "--format", "safetensors")
    assert result.returncode == 2 and "downloads as skops, pickle, joblib, onnx" in result.stderr
    with Client(controller.address) as client, pytest.raises(NotFound):
        client.model("nothing-here")


def test_a_damaged_model_file_is_an_error_never_a_model(
    cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path: Path
) -> None:
    """A damaged copy is flagged and fetched again from the agent that trained it; with no good copy anywhere the
    download is refused as stored data lost (exit 5, never 'bad input') and writes nothing."""
    controller, agents = cluster
    with Client(controller.address) as client:
        job = client.wait(client.submit({"algorithm": "svm", "dataset": "iris"})["id"], timeout=120)
        record = client.model(f"{job['model']['name']}:{job['model']['version']}")
    blob = controller.data_dir / "blobs" / record["sha256"][:2] / record["sha256"]

    def damage() -> None:
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))

    damage()
    assert cli_json(controller.cli("models", "show", "svm-iris", "--json"))["blob_status"] == "DAMAGED"
    assert "DAMAGED" in controller.cli("models", "list").stdout
    healed = controller.cli("models", "download", "svm-iris", "-o", str(tmp_path / "healed.skops"))
    assert healed.returncode == 0, healed.stderr  # its agent still had the file
    assert file_sha256(tmp_path / "healed.skops") == record["sha256"] == file_sha256(blob)
    for agent in agents:  # now no good copy exists anywhere
        agent.kill()
    damage()
    result = controller.cli("models", "download", "svm-iris", "-o", str(tmp_path / "m.skops"))
    assert result.returncode == 5 and "damaged" in result.stderr, result.stderr  # not bad input
    assert not (tmp_path / "m.skops").exists()
    blob.unlink()
    assert "MISSING" in controller.cli("models", "show", "svm-iris").stdout


def test_torch_models_register_as_safetensors_and_load_as_modules(
    cluster: tuple[ControllerProcess, list[AgentProcess]], tmp_path: Path
) -> None:
    import torch
    from sklearn.datasets import load_digits

    controller, _ = cluster
    with Client(controller.address) as client:
        spec = {"algorithm": "torch_mlp", "dataset": "digits", "hyperparameters": {"epochs": 3}, "model_name": "digits"}
        job = client.wait(client.submit(spec)["id"], timeout=300)
        assert job["state"] == "SUCCEEDED" and job["model"]["name"] == "digits"
        record = client.download_model("digits", tmp_path / "digits.safetensors")
        assert record["format"] == "safetensors" and (tmp_path / "digits.safetensors.json").exists()
        module = client.load_model("digits:1")
        client.download_model("digits:1", tmp_path / "digits.onnx", "onnx")
    import onnx

    graph = onnx.load(str(tmp_path / "digits.onnx")).graph
    assert [i.name for i in graph.input] == ["features"] and [o.name for o in graph.output] == ["logits"]
    with Client(controller.address) as client:
        assert client.model("digits")["format"] == "safetensors"
    x, y = load_digits(return_X_y=True)
    with torch.no_grad():
        predicted = module(torch.tensor(x, dtype=torch.float32)).argmax(dim=1).numpy()
    assert (predicted == y).mean() > 0.8  # raw features in: the module standardises them itself
