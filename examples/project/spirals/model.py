"""The classifier: an MLP with ReLU layers."""

from __future__ import annotations

import torch
from torch import nn


def mlp(hidden: int, layers: int) -> nn.Module:
    blocks: list[nn.Module] = [nn.Linear(2, hidden), nn.ReLU()]
    for _ in range(layers - 1):
        blocks += [nn.Linear(hidden, hidden), nn.ReLU()]
    blocks.append(nn.Linear(hidden, 2))
    return nn.Sequential(*blocks)


@torch.no_grad()
def accuracy(model: nn.Module, points: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return float((model(points).argmax(dim=1) == labels).float().mean())
