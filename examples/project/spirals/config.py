"""The run's settings: a JSON file, then command-line overrides."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class Config:
    samples: int = 2000
    noise: float = 0.15
    hidden: int = 64
    layers: int = 3
    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.01
    weight_decay: float = 1e-4
    checkpoint_every: int = 10
    seed: int = 0


def load(path: str | Path, **overrides: object) -> Config:
    """The config file's values over the defaults, then every override that is not None."""
    known = {f.name for f in fields(Config)}
    values = json.loads(Path(path).read_text())
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{path}: unknown settings {sorted(unknown)} (known: {sorted(known)})")
    config = Config(**values)
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
