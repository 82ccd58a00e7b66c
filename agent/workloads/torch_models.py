"""PyTorch models on the built-in datasets, on one rank or many (torch.distributed).

How a gang's ranks are placed: docs/architecture.md, 'The path of a job'.

Ranks meet at the rendezvous the controller chose (rank 0's agent); gloo on CPU, NCCL on GPU. Each rank
trains on its DistributedSampler shard; DDP keeps parameters identical, and every rank reports a checksum
of them so that this can be checked. Rank 0 reports the aggregate metrics and saves the model as
safetensors plus a JSON config that rebuilds it. Checkpoints (model, optimizer, epoch, RNG states) every
`checkpoint_every` epochs, and when the job is paused: then all ranks agree on the step to stop at
(an all-reduce of the stop flag), rank 0 saves where it stands inside the epoch, and the task ends as
stopped. An input named `resume.ckpt` continues from a checkpoint, mid-epoch ones included (the sampler
is seeded per epoch, so skipping the batches already done reproduces the same order).
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from tensorfleet_agent import task
from tensorfleet_agent.workloads.datasets import load
from tensorfleet_agent.workloads.gpu_cap import cap_torch_memory
from tensorfleet_agent.workloads.torchrun import torchrun_env


def _interface_towards(address: str) -> str | None:
    """The local interface that reaches `address` (a UDP connect sends nothing)."""
    import psutil

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((address, 9))
            local = probe.getsockname()[0]
        except OSError:
            return None
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == local for a in addrs):
            return name
    return None


CONFIG_FORMAT = "tensorfleet-torch-model"
CONFIG_VERSION = 2
# What a model.json may name: torch.nn.<type>(*args). A config is data, so nothing outside this list is built.
# "Residual" (the image CNN's block) is ours: args [body layers, shortcut layers], out = relu(body(x) + shortcut(x)).
LAYER_TYPES = (
    "AdaptiveAvgPool2d", "BatchNorm2d", "Conv2d", "Flatten", "Linear", "MaxPool2d", "ReLU", "Residual", "Unflatten"
)  # fmt: skip


def join_ranks(spec: dict[str, Any], rank: int, world: int, timeout_s: float) -> Any:
    """This rank's torch device, and for a gang its process group joined at the job's rendezvous (gloo on CPU, nccl
    on GPU, over the interface that reaches the master). Call after torchrun_env is in os.environ."""
    import torch
    import torch.distributed as dist

    gpu = torch.cuda.is_available()
    device = torch.device("cpu")
    if gpu:  # the job's ranks on this agent see their GPUs together, in local-rank order: ours is cuda:LOCAL_RANK
        local = int(os.environ["LOCAL_RANK"])
        device = torch.device("cuda", local if local < torch.cuda.device_count() else 0)
        torch.cuda.set_device(device)
        cap_torch_memory(torch, device)  # a task sharing its GPU keeps to its share of the memory
    if world > 1:
        rdv = spec["rendezvous"] or {}
        iface = _interface_towards(rdv["master_addr"])
        if iface:
            os.environ.setdefault("GLOO_SOCKET_IFNAME", iface)
            os.environ.setdefault("NCCL_SOCKET_IFNAME", iface)
        print(f"rank {rank}/{world}: rendezvous {rdv['master_addr']}:{rdv['master_port']} via {iface or 'default'}")
        dist.init_process_group(
            "nccl" if gpu else "gloo",
            init_method=f"tcp://{rdv['master_addr']}:{rdv['master_port']}",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=timeout_s),
        )
    return device


def _layer(kind: str, *args: Any) -> dict[str, Any]:
    return {"type": kind, "args": list(args)}


def layer_specs(kind: str, inputs: int, outputs: int, hidden: str) -> list[dict[str, Any]]:
    """The network as a list of torch.nn layers: what model.json records, so the file alone rebuilds it."""
    if kind == "cnn":
        return [
            _layer("Unflatten", 1, [1, 8, 8]),
            _layer("Conv2d", 1, 16, 3, 1, 1), _layer("ReLU"),
            _layer("Conv2d", 16, 32, 3, 1, 1), _layer("ReLU"), _layer("MaxPool2d", 2),
            _layer("Flatten"), _layer("Linear", 32 * 4 * 4, 64), _layer("ReLU"), _layer("Linear", 64, outputs),
        ]  # fmt: skip
    layers: list[dict[str, Any]] = []
    width = inputs
    for size in (int(h) for h in str(hidden).split(",")):
        layers += [_layer("Linear", width, size), _layer("ReLU")]
        width = size
    layers.append(_layer("Linear", width, outputs))
    return layers


def build(layers: list[dict[str, Any]]) -> Any:
    """torch.nn.Sequential of the layers; parameter names are "<index>.weight", as in model.safetensors."""
    from torch import nn

    modules = []
    for index, layer in enumerate(layers):
        kind = str(layer.get("type"))
        if kind not in LAYER_TYPES:
            raise ValueError(f"model.json layer {index}: {kind!r} is not one of {', '.join(LAYER_TYPES)}")
        if kind == "Residual":
            body, shortcut = layer.get("args", [[], []])
            modules.append(_residual(build(body), build(shortcut)))
            continue
        modules.append(getattr(nn, kind)(*layer.get("args", [])))
    return nn.Sequential(*modules)


def _residual(body: Any, shortcut: Any) -> Any:
    """relu(body(x) + shortcut(x)); an empty shortcut is the identity. Parameters: body.N.*, shortcut.N.*."""
    from torch import nn

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.shortcut = body, shortcut

        def forward(self, x: Any) -> Any:
            return nn.functional.relu(self.body(x) + self.shortcut(x))

    return Residual()


def _train(kind: str, params: dict[str, Any]) -> None:
    import numpy as np
    import torch
    import torch.distributed as dist
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data.distributed import DistributedSampler

    spec = task.spec()
    rank, world = task.rank(), task.world_size()
    os.environ.update(torchrun_env(spec))  # what torch's own helpers read (LOCAL_RANK, ...), as under torchrun
    torch.manual_seed(int(params["seed"]))
    np.random.seed(int(params["seed"]))
    device = join_ranks(spec, rank, world, timeout_s=60)
    x, y, features, classes = load(str(spec["dataset"]), dict(spec.get("dataset_params") or {}))
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=42, stratify=y)
    scaler = StandardScaler().fit(x_train)
    to_x = lambda a: torch.tensor(scaler.transform(a), dtype=torch.float32)  # noqa: E731
    train_set = TensorDataset(to_x(x_train), torch.tensor(y_train, dtype=torch.long))
    sampler: Any = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=int(params["seed"]))
    loader = DataLoader(train_set, batch_size=int(params["batch_size"]), sampler=sampler)
    layers = layer_specs(kind, x.shape[1], len(classes), str(params.get("hidden", "")))
    model = build(layers).to(device)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer_cls = torch.optim.Adam if params["optimizer"] == "adam" else torch.optim.SGD
    optimizer = optimizer_cls(model.parameters(), lr=float(params["lr"]), weight_decay=float(params["weight_decay"]))
    loss_fn = torch.nn.CrossEntropyLoss()
    core = model.module if world > 1 else model

    def save(next_epoch: int, batch: int, step: int) -> None:
        path = task.checkpoint_dir() / f"step-{step}.ckpt"
        state = {"model": core.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}
        torch.save({**state, "next_epoch": next_epoch, "batch": batch, "step": step}, path)
        task.save_checkpoint(path, step=step)

    def stop_now() -> bool:
        """Every rank must stop at the same step, so the flag is agreed on (one tiny all-reduce per step)."""
        flag = task.stop_requested()
        if world == 1:
            return flag
        agreed = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        return bool(agreed.item() > 0)

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
    accuracy = 0.0
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        model.train()
        seen, started, total_loss = 0, time.perf_counter(), 0.0
        for batch, (xb, yb) in enumerate(loader):
            if epoch == start_epoch and batch < skip:
                continue  # done before the checkpoint this task resumed from
            if stop_now():
                if rank == 0:
                    save(epoch, batch, step)
                if world > 1:
                    dist.barrier()
                    dist.destroy_process_group()
                raise task.Stopped(f"saved a checkpoint at epoch {epoch}, batch {batch} (step {step}) and stopped")
            optimizer.zero_grad()
            loss = loss_fn(model(xb.to(device)), yb.to(device))
            loss.backward()
            optimizer.step()
            value = loss.item()
            seen += len(xb)
            total_loss += value * len(xb)
            step += 1
            task.report(step=step, loss=value)
        rate = seen / max(1e-9, time.perf_counter() - started)
        accuracy = _accuracy(model, to_x(x_test), y_test, device)
        if rank == 0:
            task.report(
                step=step,
                epoch=float(epoch + 1),
                epoch_loss=total_loss / max(1, seen),
                accuracy=accuracy,
                samples_per_s=rate * world,
            )
        task.progress((epoch + 1) / epochs)
        if rank == 0 and every and (epoch + 1) % every == 0 and epoch + 1 < epochs:
            save(epoch + 1, 0, step)
    checksum = float(sum(p.detach().double().sum() for p in core.parameters()))
    task.report(step=step, param_checksum=checksum)
    if rank == 0:
        task.report(step=step, test_accuracy=accuracy)
        _save(core, kind, layers, {"features": features, "classes": classes, "scaler": scaler})
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def _accuracy(model: Any, x: Any, y: Any, device: Any) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        predicted = model(x.to(device)).argmax(dim=1).cpu().numpy()
    return float((predicted == y).mean())


def _save(model: Any, kind: str, layers: list[dict[str, Any]], data: dict[str, Any]) -> None:
    """safetensors weights plus a JSON config that describes the module completely (see describe / rebuild)."""
    from safetensors.torch import save_file

    workdir = Path(task.checkpoint_dir().parent)
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, workdir / "model.safetensors")
    config = describe(kind, layers, data["features"], data["classes"], data["scaler"])
    config["dataset"] = str(task.spec().get("dataset", ""))
    config["versions"] = task.package_versions()
    (workdir / "model.json").write_text(json.dumps(config, indent=1))
    task.save_artifact(workdir / "model.safetensors", kind="model")
    task.save_artifact(workdir / "model.json", kind="model_config")


def describe(
    kind: str, layers: list[dict[str, Any]], features: list[str], classes: list[str], scaler: Any
) -> dict[str, Any]:
    """model.json: what a program without TensorFleet needs to rebuild the module and feed it."""
    return {
        "format": CONFIG_FORMAT,
        "format_version": CONFIG_VERSION,
        "framework": "torch",
        "architecture": {"name": kind, "module": "torch.nn.Sequential", "layers": layers},
        "input": {
            "shape": [None, len(features)],  # batch first, any batch size
            "dtype": "float32",
            "features": list(features),
            "standardize": {
                "mean": [float(v) for v in scaler.mean_],
                "scale": [float(v) for v in scaler.scale_],
                "applied": "once, before the first layer: the layers take (raw - mean) / scale. model.safetensors "
                "holds the layers only; the module of load_model and the ONNX export include this step, "
                "so they take raw features",
            },
        },
        "output": {"shape": [None, len(classes)], "dtype": "float32", "kind": "logits", "classes": list(classes)},
    }


def upgrade(config: dict[str, Any]) -> dict[str, Any]:
    """A model.json of any format version as the current one (version 1 had flat keys and no layer list)."""
    if int(config.get("format_version", 1)) >= CONFIG_VERSION:
        return config
    kind, features, classes = str(config["architecture"]), list(config["features"]), list(config["classes"])
    layers = layer_specs(kind, int(config["inputs"]), int(config["outputs"]), str(config.get("hidden") or ""))

    class Scaler:
        mean_, scale_ = config["input_mean"], config["input_scale"]

    return {**config, **describe(kind, layers, features, classes, Scaler)}


def rebuild(config: dict[str, Any], weights: Any) -> Any:
    """The trained module from model.json and its safetensors file: raw features in, class logits out."""
    import torch
    from safetensors.torch import load_file

    config = upgrade(config)
    net = build(config["architecture"]["layers"])
    net.load_state_dict(load_file(str(weights)))
    standardize = config["input"]["standardize"]

    class Standardized(torch.nn.Module):
        """The one place the input scaling is applied."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(standardize["mean"], dtype=torch.float32))
            self.register_buffer("scale", torch.tensor(standardize["scale"], dtype=torch.float32))
            self.net = net

        def forward(self, x: Any) -> Any:
            return self.net((x - self.mean) / self.scale)

    return Standardized().eval()


def torch_mlp(params: dict[str, Any]) -> None:
    _train("mlp", params)


def cnn(params: dict[str, Any]) -> None:
    _train("cnn", params)
