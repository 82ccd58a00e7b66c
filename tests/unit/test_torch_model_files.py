"""A torch model's files: model.json describes the module completely, the input scaling is applied exactly once,
and the ONNX export takes any batch size. The workload trains in this process (iris, 1 epoch: about a second)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from tensorfleet_agent import task  # noqa: E402
from tensorfleet_agent.workloads import torch_models  # noqa: E402
from tensorfleet_agent.workloads.registry import get_workload  # noqa: E402
from tensorfleet_desktop.controller.registry import _convert  # noqa: E402


class Channel:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, float]]]:
    """(task dir with model.safetensors and model.json, the metrics the task reported)."""
    workdir = tmp_path_factory.mktemp("torch-task")
    params = get_workload("torch_mlp").schema.validate({"epochs": 1, "hidden": "16"})
    spec = {"task_id": "t", "job_id": "j", "rank": 0, "world_size": 1, "dataset": "iris", "params": params}
    channel = Channel()
    saved_env = dict(os.environ)
    task._install(task.TaskContext(spec, workdir, None, channel))  # type: ignore[arg-type]
    try:
        torch_models.torch_mlp(params)
    finally:
        task._install(None)
        os.environ.clear()
        os.environ.update(saved_env)
    metrics = {name: value for m in channel.messages if m["t"] == "metrics" for name, value in m["values"].items()}
    yield workdir, metrics


def _test_split() -> tuple[Any, Any, Any]:
    """The split and scaler the workload trained with (same seed and stratification)."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from tensorfleet_agent.workloads.datasets import load

    x, y, _features, _classes = load("iris", {})
    x_train, x_test, _y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=42, stratify=y)
    return x_test, y_test, StandardScaler().fit(x_train)


def test_model_json_describes_the_module_completely(trained: tuple[Path, dict[str, float]]) -> None:
    config = json.loads((trained[0] / "model.json").read_text())
    assert config["format"] == "tensorfleet-torch-model" and config["format_version"] == 2
    assert config["architecture"] == {
        "name": "mlp",
        "module": "torch.nn.Sequential",
        "layers": [
            {"type": "Linear", "args": [4, 16]},
            {"type": "ReLU", "args": []},
            {"type": "Linear", "args": [16, 3]},
        ],
    }
    assert config["input"]["shape"] == [None, 4] and config["input"]["dtype"] == "float32"
    assert config["input"]["features"][0] == "sepal length (cm)"
    scaling = config["input"]["standardize"]
    _x, _y, scaler = _test_split()
    assert np.allclose(scaling["mean"], scaler.mean_) and np.allclose(scaling["scale"], scaler.scale_)
    assert "once" in scaling["applied"]
    assert config["output"]["classes"] == ["setosa", "versicolor", "virginica"]
    assert config["output"]["kind"] == "logits" and "torch" in config["versions"]


def test_loaded_module_predicts_as_the_trained_one_scaling_applied_once(
    trained: tuple[Path, dict[str, float]],
) -> None:
    from safetensors.torch import load_file

    workdir, metrics = trained
    config = json.loads((workdir / "model.json").read_text())
    module = torch_models.rebuild(config, workdir / "model.safetensors")
    x_test, y_test, scaler = _test_split()
    # what training saw: the bare layers on inputs the scaler standardised
    layers = torch_models.build(config["architecture"]["layers"])
    layers.load_state_dict(load_file(str(workdir / "model.safetensors")))
    with torch.no_grad():
        at_training = layers.eval()(torch.tensor(scaler.transform(x_test), dtype=torch.float32))
        loaded = module(torch.tensor(x_test, dtype=torch.float32))  # raw features in
    assert torch.allclose(loaded, at_training, atol=1e-5)
    assert float((loaded.argmax(dim=1).numpy() == y_test).mean()) == metrics["test_accuracy"]


def test_a_version_1_config_loads_the_same_module(trained: tuple[Path, dict[str, float]]) -> None:
    """Models registered before model.json named its layers still load (and download with the new JSON)."""
    workdir, _ = trained
    config = json.loads((workdir / "model.json").read_text())
    legacy = {
        "architecture": "mlp",
        "inputs": 4,
        "outputs": 3,
        "hidden": "16",
        "features": config["input"]["features"],
        "classes": config["output"]["classes"],
        "input_mean": config["input"]["standardize"]["mean"],
        "input_scale": config["input"]["standardize"]["scale"],
        "framework": "torch",
        "versions": config["versions"],
    }
    assert torch_models.upgrade(legacy)["architecture"] == config["architecture"]
    x = torch.tensor(_test_split()[0], dtype=torch.float32)
    with torch.no_grad():
        a = torch_models.rebuild(legacy, workdir / "model.safetensors")(x)
        b = torch_models.rebuild(config, workdir / "model.safetensors")(x)
    assert torch.equal(a, b)


def test_onnx_export_takes_any_batch_size(trained: tuple[Path, dict[str, float]], tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    workdir, _ = trained
    config = json.loads((workdir / "model.json").read_text())
    out = tmp_path / "model.onnx"
    _convert({"format": "safetensors", "config": config}, workdir / "model.safetensors", "onnx", out)
    graph = onnx.load(str(out)).graph
    batch_axis = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_axis.dim_param and not batch_axis.dim_value  # symbolic, not fixed to 1
    onnx.checker.check_model(str(out), full_check=True)
    rows = _test_split()[0][:7].astype(np.float32)
    with torch.no_grad():
        expected = torch_models.rebuild(config, workdir / "model.safetensors")(torch.tensor(rows)).numpy()
    try:
        import onnxruntime
    except ImportError:  # the checker's shape inference then says the output follows the input's batch axis
        inferred = onnx.shape_inference.infer_shapes(onnx.load(str(out))).graph.output[0]
        assert inferred.type.tensor_type.shape.dim[0].dim_param == batch_axis.dim_param
        return
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"features": rows})  # raw features: the graph standardises them itself
    assert logits.shape == (7, 3) and np.allclose(logits, expected, atol=1e-4)
