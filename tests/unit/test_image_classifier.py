"""The image_classifier workload: an image folder (class_name/*.png|*.jpg) is scanned with errors that name the
problem, a small ResNet-style CNN learns the synthetic shapes well above chance in a few CPU seconds, and its
model.json + model.safetensors rebuild the same module (and export to ONNX). A two-rank gang on two agents:
tests/integration/test_controller_training.py."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("PIL")

from tensorfleet_agent import task  # noqa: E402
from tensorfleet_agent.core.errors import ValidationError  # noqa: E402
from tensorfleet_agent.workloads import image_classifier, torch_models  # noqa: E402
from tensorfleet_agent.workloads.datasets import check_dataset  # noqa: E402
from tensorfleet_agent.workloads.image_folder import ImageFolderError, Pixels, decode, scan, split  # noqa: E402
from tensorfleet_agent.workloads.registry import get_workload  # noqa: E402
from tensorfleet_agent.workloads.shapes import generate  # noqa: E402

QUICK = {"epochs": 3, "image_size": 24, "batch_size": 16, "width": 8}


class Channel:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


def _run(workdir: Path, params: dict[str, Any], channel: Channel | None = None) -> dict[str, float]:
    """Run the workload in this process as the worker would; the last value of each metric it reported."""
    params = get_workload("image_classifier").schema.validate(params)
    spec: dict[str, Any] = {"task_id": "t", "job_id": "j", "rank": 0, "world_size": 1, "params": params}
    channel = channel or Channel()
    saved_env, threads = dict(os.environ), torch.get_num_threads()
    torch.set_num_threads(1)  # as the agent caps a slot's threads (on a loaded box two threads took 3x longer)
    task._install(task.TaskContext(spec, workdir, None, channel))  # type: ignore[arg-type]
    try:
        image_classifier.image_classifier(params)
    finally:
        torch.set_num_threads(threads)
        task._install(None)
        os.environ.clear()
        os.environ.update(saved_env)
    return {name: value for m in channel.messages if m["t"] == "metrics" for name, value in m["values"].items()}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate(root, per_class=24, size=24, classes=3, seed=1)
    return root


@pytest.fixture(scope="module")
def trained(shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, float]]]:
    workdir = tmp_path_factory.mktemp("image-task")
    yield workdir, _run(workdir, {**QUICK, "data_dir": str(shapes)})


def test_learns_the_synthetic_shapes_well_above_chance(trained: tuple[Path, dict[str, float]]) -> None:
    _workdir, metrics = trained
    assert metrics["epoch"] == 3.0
    assert metrics["test_accuracy"] > 0.6  # three classes: chance is 1/3
    assert metrics["train_accuracy"] > 0.6
    assert {"loss", "epoch_loss", "val_accuracy", "val_loss", "accuracy", "param_checksum"} <= set(metrics)


def test_model_json_rebuilds_the_trained_module(shapes: Path, trained: tuple[Path, dict[str, float]]) -> None:
    workdir, metrics = trained
    config = json.loads((workdir / "model.json").read_text())
    assert config["output"]["classes"] == ["circle", "square", "triangle"]
    assert config["input"]["shape"] == [None, 3, 24, 24]
    module = torch_models.rebuild(config, workdir / "model.safetensors")
    folder = scan(shapes)
    _train, val = split(folder, 0.2, 42)
    pixels = torch.stack([torch.from_numpy(decode(folder.samples[i][0], 24)) for i in val]).float() / 255
    with torch.no_grad():
        predicted = module(pixels).argmax(dim=1)
    truth = torch.tensor([folder.samples[i][1] for i in val])
    assert float((predicted == truth).float().mean()) == pytest.approx(metrics["test_accuracy"])


class PauseAfter(Channel):
    """Asks the task to stop (as SIGUSR1 does) once it reported `steps` steps."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def send(self, message: dict[str, Any]) -> None:
        super().send(message)
        if message["t"] == "metrics" and message["step"] >= self.steps:
            task._request_stop()


def test_a_paused_task_checkpoints_mid_epoch_and_its_resume_continues_from_there(shapes: Path, tmp_path: Path) -> None:
    import shutil

    params = {**QUICK, "epochs": 2, "data_dir": str(shapes)}
    paused = PauseAfter(steps=2)
    with pytest.raises(task.Stopped, match=r"epoch 0, batch 2 \(step 2\)"):
        _run(tmp_path, params, paused)
    (checkpoint,) = [m for m in paused.messages if m["t"] == "checkpoint"]
    assert checkpoint["step"] == 2 and not (tmp_path / "model.safetensors").exists()
    (tmp_path / "inputs").mkdir()
    shutil.copy(tmp_path / "checkpoints" / checkpoint["name"], tmp_path / "inputs" / task.RESUME_INPUT)
    resumed = Channel()
    metrics = _run(tmp_path, params, resumed)
    steps = [m["step"] for m in resumed.messages if m["t"] == "metrics" and "loss" in m["values"]]
    assert steps[0] == 3 and steps == list(range(3, 3 + len(steps)))  # on from the checkpoint, no step twice
    assert metrics["epoch"] == 2.0 and (tmp_path / "model.safetensors").is_file()


def test_reads_the_task_dataset_dir_when_no_data_dir_is_given(
    shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(task.DATASET_DIR_ENV, str(shapes))
    assert image_classifier.dataset_root({"data_dir": ""}) == shapes
    monkeypatch.delenv(task.DATASET_DIR_ENV)
    with pytest.raises(ValueError, match="needs an image folder"):
        image_classifier.dataset_root({"data_dir": ""})


def _png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (200, 10, 10)).save(path)


def test_folder_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ImageFolderError, match="not a folder"):
        scan(tmp_path / "missing")
    (tmp_path / "cats").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ImageFolderError, match="no images"):
        scan(tmp_path)
    _png(tmp_path / "cats" / "a.png")
    with pytest.raises(ImageFolderError, match=r"only one class \(cats\)"):
        scan(tmp_path)
    (tmp_path / "dogs").mkdir()
    with pytest.raises(ImageFolderError, match="class folder 'dogs' has no"):
        scan(tmp_path)
    _png(tmp_path / "dogs" / "nested" / "b.PNG")
    bad = tmp_path / "dogs" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageFolderError, match=re.escape(f"{bad}: not a readable image")):
        scan(tmp_path)
    bad.unlink()
    (tmp_path / "dogs" / ".hidden.png").write_bytes(b"junk")  # hidden files are not samples
    folder = scan(tmp_path)
    assert folder.classes == ("cats", "dogs") and folder.counts() == {"cats": 1, "dogs": 1}


def test_a_train_and_val_layout_is_the_split_and_a_wrapper_folder_is_looked_into(tmp_path: Path) -> None:
    for part, label, n in [("train", "cats", 3), ("train", "dogs", 2), ("val", "cats", 1), ("val", "dogs", 1)]:
        for k in range(n):
            _png(tmp_path / "upload" / "pets" / part / label / f"{k}.png")
    folder = scan(tmp_path / "upload")  # "upload" holds only "pets", which holds train/ and val/
    assert folder.root == tmp_path / "upload" / "pets" and folder.classes == ("cats", "dogs")
    train, val = split(folder, 0.5, 0)
    assert [folder.samples[i][0].parts[-3] for i in train] == ["train"] * 5
    assert [(folder.samples[i][0].parts[-3], folder.samples[i][1]) for i in val] == [("val", 0), ("val", 1)]
    _png(tmp_path / "upload" / "pets" / "val" / "birds" / "0.png")
    with pytest.raises(ImageFolderError, match="class 'birds' is not among the training classes"):
        scan(tmp_path / "upload")


def test_sixteen_bit_greyscale_keeps_its_range(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    ramp = np.repeat(np.linspace(0, 65535, 16).astype(np.uint16)[None, :], 16, axis=0)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    pixels = decode(tmp_path / "deep.png", 16)
    assert pixels.shape == (3, 16, 16) and pixels.min() <= 10 and pixels.max() >= 245  # not clipped to white
    assert np.array_equal(pixels[0], pixels[2])


def test_an_unreadable_image_fails_the_task_naming_it(shapes: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(shapes, root)
    (root / "square" / "0003.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ImageFolderError, match=re.escape("square/0003.png: not a readable image")):
        _run(tmp_path / "work", {**QUICK, "data_dir": str(root)})


def test_the_split_is_per_class_and_seeded(shapes: Path) -> None:
    folder = scan(shapes, check=False)
    train, val = split(folder, 0.25, 7)
    assert split(folder, 0.25, 7) == (train, val) and not set(train) & set(val)
    assert sorted(folder.samples[i][1] for i in val) == [0] * 6 + [1] * 6 + [2] * 6
    assert split(folder, 0.0, 7)[1] == []


def test_the_pixel_cache_holds_what_its_bytes_allow(shapes: Path) -> None:
    import numpy as np

    pixels = Pixels(scan(shapes, check=False), 16, cache_bytes=3 * 16 * 16 * 5)  # room for five images
    first = [pixels(i) for i in range(10)]
    assert len(pixels.cache) == 5 and all(a.shape == (3, 16, 16) and a.dtype == np.uint8 for a in first)
    assert all(np.array_equal(pixels(i), first[i]) for i in range(10))  # cached or decoded again: the same


def test_schema_and_dataset_check() -> None:
    workload = get_workload("image_classifier")
    assert workload.tasks == ("images",) and "PIL" in workload.requires
    params = workload.schema.validate({})
    assert {k: params[k] for k in ("epochs", "batch_size", "image_size", "val_fraction", "seed")} == {
        "epochs": 10,
        "batch_size": 32,
        "image_size": 64,
        "val_fraction": 0.2,
        "seed": 42,
    }
    with pytest.raises(ValidationError, match="image_size"):
        workload.schema.validate({"image_size": 4})
    with pytest.raises(ValidationError, match="data_dir"):
        workload.schema.validate({"data_dir": "relative/path"})
    assert check_dataset("image_classifier", workload.tasks, "pets:3", {}) == {}  # any dataset version by name
    with pytest.raises(ValidationError, match="dataset_params"):
        check_dataset("image_classifier", workload.tasks, "pets", {"target": "y"})
    from tensorfleet_desktop.controller.jobspec import parse_job_spec

    job = parse_job_spec({"algorithm": "image_classifier", "dataset": "pets:2", "num_workers": 2, "epochs": 4})
    assert (job.dataset, job.num_workers, job.hyperparameters["epochs"]) == ("pets:2", 2, 4)


def test_onnx_export_of_the_image_model(trained: tuple[Path, dict[str, float]], tmp_path: Path) -> None:
    """The registry's conversion takes an image batch (N, 3, H, W), not a row of features."""
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    import numpy as np

    from tensorfleet_desktop.controller.registry import _convert

    workdir, _ = trained
    config = json.loads((workdir / "model.json").read_text())
    out = tmp_path / "model.onnx"
    _convert({"format": "safetensors", "config": config}, workdir / "model.safetensors", "onnx", out)
    images = np.random.default_rng(0).random((5, 3, 24, 24), dtype=np.float32)
    with torch.no_grad():
        expected = torch_models.rebuild(config, workdir / "model.safetensors")(torch.tensor(images)).numpy()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"features": images})
    assert logits.shape == (5, 3) and np.allclose(logits, expected, atol=1e-4)
