"""A small ResNet-style CNN trained on an image folder (`class_name/*.png|*.jpg|*.jpeg`), on one rank or many.

The folder is the job's dataset version, materialized read-only at TENSORFLEET_DATASET_DIR, or the `data_dir`
parameter (a folder on the agent). torchvision is not used: its wheel for the pinned torch (0.28.0) needs exactly
torch 2.13.0 and the newest (0.29) torch >= 2.14, so depending on it lets pip replace the agent's torch; the
network here is a few residual blocks (torch_models.build rebuilds it from model.json's layer list).

Gangs meet, shard and checkpoint as torch_models does (gloo on CPU, NCCL on GPU; DistributedSampler shards;
the stop flag all-reduced; rank 0 saves model.safetensors + model.json). Every rank scans the folder and
computes the same train/val split and channel statistics from the seed; accuracies are all-reduced counts.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tensorfleet_agent import task
from tensorfleet_agent.workloads.image_folder import CACHE_BYTES, ImageFolder, Pixels, channel_stats, scan, split
from tensorfleet_agent.workloads.torch_models import CONFIG_FORMAT, CONFIG_VERSION, build, join_ranks
from tensorfleet_agent.workloads.torchrun import torchrun_env


def dataset_root(params: dict[str, Any]) -> Path:
    """The folder to train on: the `data_dir` parameter, else the task's dataset dir."""
    if params.get("data_dir"):
        return Path(str(params["data_dir"]))
    found = task.dataset_dir()  # TENSORFLEET_DATASET_DIR: the job's dataset version, read-only
    if found is not None:
        return found
    raise ValueError(
        "image_classifier needs an image folder: submit it with --dataset NAME (a dataset uploaded from a folder of "
        "class_name/*.png|*.jpg) or set the data_dir parameter"
    )


def _conv(cin: int, cout: int, stride: int) -> list[dict[str, Any]]:
    # Conv2d(in, out, kernel, stride, padding, dilation, groups, bias): no bias before a batch norm
    return [{"type": "Conv2d", "args": [cin, cout, 3, stride, 1, 1, 1, False]}, {"type": "BatchNorm2d", "args": [cout]}]


def _block(cin: int, cout: int, stride: int) -> dict[str, Any]:
    body = [*_conv(cin, cout, stride), {"type": "ReLU", "args": []}, *_conv(cout, cout, 1)]
    shortcut: list[dict[str, Any]] = []
    if stride != 1 or cin != cout:  # a 1x1 projection where the shape changes
        shortcut = [
            {"type": "Conv2d", "args": [cin, cout, 1, stride, 0, 1, 1, False]},
            {"type": "BatchNorm2d", "args": [cout]},
        ]
    return {"type": "Residual", "args": [body, shortcut]}


def layer_specs(classes: int, width: int) -> list[dict[str, Any]]:
    """Stem, three residual stages (width, 2x at half the size, 4x at a quarter), global pooling, a linear head."""
    return [
        *_conv(3, width, 1),
        {"type": "ReLU", "args": []},
        _block(width, width, 1),
        _block(width, 2 * width, 2),
        _block(2 * width, 4 * width, 2),
        {"type": "AdaptiveAvgPool2d", "args": [1]},
        {"type": "Flatten", "args": []},
        {"type": "Linear", "args": [4 * width, classes]},
    ]


def describe(
    layers: list[dict[str, Any]], folder: ImageFolder, size: int, mean: list[float], std: list[float]
) -> dict[str, Any]:
    """model.json: the layers, how an image becomes the input, and the class names (torch_models.rebuild reads it)."""

    def per_channel(values: list[float]) -> list[list[list[float]]]:
        return [[[v]] for v in values]  # (3, 1, 1): broadcasts over (N, 3, H, W)

    return {
        "format": CONFIG_FORMAT,
        "format_version": CONFIG_VERSION,
        "framework": "torch",
        "architecture": {"name": "image_cnn", "module": "torch.nn.Sequential", "layers": layers},
        "input": {
            "shape": [None, 3, size, size],
            "dtype": "float32",
            "features": ["image"],
            "image": {
                "mode": "RGB",
                "size": [size, size],
                "resize": "bilinear, to size x size (aspect ratio not kept)",
                "pixels": "value / 255, channels first",
            },
            "standardize": {
                "mean": per_channel(mean),
                "scale": per_channel(std),
                "applied": "per channel, once, before the first layer: the layers take (pixels - mean) / scale. "
                "model.safetensors holds the layers only; the module of load_model includes this step, so it "
                "takes pixels in 0..1",
            },
        },
        "output": {
            "shape": [None, len(folder.classes)],
            "dtype": "float32",
            "kind": "logits",
            "classes": list(folder.classes),
        },
        "data": {"images": len(folder.samples), "per_class": folder.counts()},
    }


class _Images:
    """A torch-style dataset over sample indices: (uint8 pixels (3, S, S), class index)."""

    def __init__(self, pixels: Pixels, indices: list[int]) -> None:
        self.pixels, self.indices = pixels, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[Any, int]:
        import torch

        index = self.indices[position]
        return torch.from_numpy(self.pixels(index)), self.pixels.folder.samples[index][1]


def image_classifier(params: dict[str, Any]) -> None:
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    spec = task.spec()
    rank, world = task.rank(), task.world_size()
    seed, size = int(params["seed"]), int(params["image_size"])
    folder = scan(dataset_root(params))  # errors (empty, one class, unreadable file) before any rendezvous
    train_idx, val_idx = split(folder, float(params["val_fraction"]), seed)
    print(
        f"{len(folder.samples)} images in {len(folder.classes)} classes under {folder.root}: "
        f"{len(train_idx)} to train on, {len(val_idx)} to validate"
        + (" (its own val/ folder)" if folder.given_val >= 0 else "")
    )
    os.environ.update(torchrun_env(spec))
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    device = join_ranks(spec, rank, world, timeout_s=120)
    limit = int(spec.get("memory_limit_bytes") or 0)  # a task's memory limit: the cache takes a quarter at most
    pixels = Pixels(folder, size, min(CACHE_BYTES, limit // 4) if limit else CACHE_BYTES)
    mean, std = channel_stats(pixels, train_idx, seed)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def to_input(xb: Any) -> Any:
        return (xb.to(device).float() / 255.0 - mean_t) / std_t

    train_set: Any = _Images(pixels, train_idx)
    sampler: Any = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader: Any = DataLoader(train_set, batch_size=int(params["batch_size"]), sampler=sampler)
    # each rank validates its own slice (no padding: the summed counts are exact)
    val_set: Any = _Images(pixels, val_idx[rank::world])
    val_loader: Any = DataLoader(val_set, batch_size=max(64, int(params["batch_size"])))
    layers = layer_specs(len(folder.classes), int(params["width"]))
    model = build(layers).to(device)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    core = model.module if world > 1 else model
    optimizer = torch.optim.Adam(model.parameters(), lr=float(params["lr"]), weight_decay=float(params["weight_decay"]))
    loss_fn = torch.nn.CrossEntropyLoss()

    def summed(*values: float) -> list[float]:
        """The values added up over the ranks (one all-reduce)."""
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        if world > 1:
            dist.all_reduce(tensor)
        return [float(v) for v in tensor.tolist()]

    def save(next_epoch: int, batch: int, step: int) -> None:
        path = task.checkpoint_dir() / f"step-{step}.ckpt"
        state = {"model": core.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}
        torch.save({**state, "next_epoch": next_epoch, "batch": batch, "step": step}, path)
        task.save_checkpoint(path, step=step)

    def stop_now() -> bool:
        flag = task.stop_requested()
        if world == 1:
            return flag
        return summed(1.0 if flag else 0.0)[0] > 0

    start_epoch, skip, step = 0, 0, 0
    resume = task.resume_checkpoint()
    if resume is not None:
        state = torch.load(resume, map_location=device, weights_only=False)
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start_epoch, skip, step = int(state["next_epoch"]), int(state["batch"]), int(state["step"])
        print(f"resumed from checkpoint of epoch {start_epoch}, batch {skip} (step {step})")
    epochs, every = int(params["epochs"]), int(params["checkpoint_every"])
    val_accuracy = train_accuracy = 0.0
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        model.train()
        seen, right, total_loss, started = 0, 0, 0.0, time.perf_counter()
        for batch, (xb, yb) in enumerate(loader):
            if epoch == start_epoch and batch < skip:
                continue
            if stop_now():
                if rank == 0:
                    save(epoch, batch, step)
                if world > 1:
                    dist.barrier()
                    dist.destroy_process_group()
                raise task.Stopped(f"saved a checkpoint at epoch {epoch}, batch {batch} (step {step}) and stopped")
            optimizer.zero_grad()
            target = yb.to(device)
            logits = model(to_input(xb))
            loss = loss_fn(logits, target)
            loss.backward()
            optimizer.step()
            value = loss.item()
            seen += len(xb)
            right += int((logits.argmax(dim=1) == target).sum().item())
            total_loss += value * len(xb)
            step += 1
            task.report(step=step, loss=value)
        elapsed = max(1e-9, time.perf_counter() - started)
        all_seen, all_right, all_loss = summed(seen, right, total_loss)
        train_accuracy = all_right / max(1.0, all_seen)
        val_right, val_seen, val_loss = _evaluate(model, val_loader, to_input, device, loss_fn)
        val_right, val_seen, val_loss = summed(val_right, val_seen, val_loss)
        val_accuracy = val_right / val_seen if val_seen else train_accuracy
        if rank == 0:
            epoch_metrics = {
                "epoch": float(epoch + 1),
                "epoch_loss": all_loss / max(1.0, all_seen),
                "train_accuracy": train_accuracy,
                "accuracy": val_accuracy,
                "samples_per_s": all_seen / elapsed,
            }
            if val_seen:
                epoch_metrics.update(val_accuracy=val_accuracy, val_loss=val_loss / val_seen)
            task.report(step=step, **epoch_metrics)
        task.progress((epoch + 1) / epochs)
        if rank == 0 and every and (epoch + 1) % every == 0 and epoch + 1 < epochs:
            save(epoch + 1, 0, step)
    checksum = float(sum(p.detach().double().sum() for p in core.parameters()))
    task.report(step=step, param_checksum=checksum)
    if rank == 0:
        task.report(step=step, test_accuracy=val_accuracy, train_accuracy=train_accuracy)
        _save(core, describe(layers, folder, size, mean, std))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def _evaluate(model: Any, loader: Any, to_input: Any, device: Any, loss_fn: Any) -> tuple[float, float, float]:
    """(right, seen, summed loss) over this rank's share of the validation images."""
    import torch

    model.eval()
    right = seen = 0
    total = 0.0
    with torch.no_grad():
        for xb, yb in loader:
            target = yb.to(device)
            logits = model(to_input(xb))
            right += int((logits.argmax(dim=1) == target).sum().item())
            seen += len(xb)
            total += float(loss_fn(logits, target).item()) * len(xb)
    return float(right), float(seen), total


def _save(model: Any, config: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    workdir = Path(task.checkpoint_dir().parent)
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, workdir / "model.safetensors")
    spec = task.spec()
    config["dataset"] = str(spec.get("dataset", ""))
    config["versions"] = task.package_versions()
    (workdir / "model.json").write_text(json.dumps(config, indent=1))
    task.save_artifact(workdir / "model.safetensors", kind="model")
    task.save_artifact(workdir / "model.json", kind="model_config")
