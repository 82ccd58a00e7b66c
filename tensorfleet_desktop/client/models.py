"""Helpers on what the SDK returns: a sweep's trials as rows, a downloaded model loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tensorfleet_agent.core.errors import ValidationError
from tensorfleet_agent.workloads.skops_files import load_sklearn
from tensorfleet_desktop.client.errors import InvalidRequest


def trial_rows(job: dict[str, Any]) -> list[dict[str, Any]]:
    """A sweep job's trials: parameters, score on the sweep's metric, state (PRUNED too), duration, agent."""
    sweep = job["spec"].get("sweep") or {}
    metric = sweep.get("metric", "")
    return [
        {
            "trial": t["index"],
            "params": {k: (t["params"] or {}).get(k) for k in sweep.get("params", {})},
            "score": t["metrics"].get(metric),
            "state": "PRUNED" if t["exit_cause"] == "pruned" else t["state"],
            "duration": (t["finished_at"] - t["started_at"]) if t["finished_at"] and t["started_at"] else None,
            "agent": t["agent"],
        }
        for t in job["task_list"]
    ]


def load_model_file(path: Path, fmt: str) -> Any:
    """Load a downloaded model: skops against an allow-list, or safetensors with its PATH.json config."""
    if fmt == "skops":
        try:
            return load_sklearn(path)
        except ValidationError as exc:
            raise InvalidRequest(f"{path}: {exc}") from None
    if fmt == "safetensors":
        from tensorfleet_agent.workloads.torch_models import rebuild

        config = path.with_name(path.name + ".json")
        if not config.is_file():  # a project's own tensors: TensorFleet cannot know the module they belong to
            raise InvalidRequest(
                f"{path} holds plain tensors without a TensorFleet model config (a project's model): download it "
                "(download_model) and load it with safetensors.torch.load_file into your own module"
            )
        return rebuild(json.loads(config.read_text()), path)
    raise InvalidRequest(
        f"{fmt} models are downloaded, not loaded, by the SDK (safe formats only): use download_model"
        + (" and onnxruntime" if fmt == "onnx" else "")
    )
