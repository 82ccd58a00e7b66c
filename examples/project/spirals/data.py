"""Two interleaved spirals, generated (no download): a classic problem a linear model cannot solve."""

from __future__ import annotations

import math

import torch


def spirals(samples: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`samples` points (x, y) and their class (0 or 1), shuffled."""
    gen = torch.Generator().manual_seed(seed)
    half = samples // 2
    turn = torch.sqrt(torch.rand(half, generator=gen)) * 3 * math.pi
    arm = torch.stack([turn * torch.cos(turn), turn * torch.sin(turn)], dim=1) / (3 * math.pi)
    points = torch.cat([arm, -arm]) + noise * torch.randn(2 * half, 2, generator=gen) / 3
    labels = torch.cat([torch.zeros(half), torch.ones(half)]).long()
    order = torch.randperm(2 * half, generator=gen)
    return points[order], labels[order]


def split(
    points: torch.Tensor, labels: torch.Tensor, test_fraction: float = 0.2
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    cut = int(len(points) * (1 - test_fraction))
    return (points[:cut], labels[:cut]), (points[cut:], labels[cut:])
