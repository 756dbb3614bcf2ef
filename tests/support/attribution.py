"""Small conv stand-ins for the U-Net and an independent brute-force Shapley oracle."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn


class TinySeg(nn.Module):
    """10 bands -> 1 logit per pixel; ReLU and a product term make features interact."""

    def __init__(self, seed: int = 0, bands: int = 10) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(bands, 6, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 1, 3, padding=1)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(x))
        return self.conv2(h) + 0.1 * x[:, :1] * x[:, 1:2]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine more threads thrash (8x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_model() -> nn.Module:
    return TinySeg().eval()


@pytest.fixture
def tiny_input() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 10, 16, 16, generator=gen)
    return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1) * 2  # smooth, like imagery


def brute_force_shapley(value: Callable[[frozenset[int]], float], n: int) -> np.ndarray:
    """phi_i = sum_S |S|!(n-|S|-1)!/n! (v(S+i) - v(S)), by itertools over all coalitions."""
    phi = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            w = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in itertools.combinations(others, size):
                s = frozenset(subset)
                phi[i] += w * (value(s | {i}) - value(s))
    return phi


def composite_value(
    model: nn.Module,
    mask: torch.Tensor,
    x: torch.Tensor,
    baseline: torch.Tensor,
    player_of: Callable[[frozenset[int]], torch.Tensor],
    n_players: int,
) -> Callable[[frozenset[int]], float]:
    """v(S): model logits summed over ``mask`` at x where players of S are on, else baseline.

    Every coalition is evaluated up front, 256 composite inputs per forward pass.
    """
    subsets = [
        frozenset(c)
        for size in range(n_players + 1)
        for c in itertools.combinations(range(n_players), size)
    ]
    table: dict[frozenset[int], float] = {}
    for start in range(0, len(subsets), 256):
        chunk = subsets[start : start + 256]
        keep = torch.cat([player_of(s).to(x.dtype).expand_as(x) for s in chunk])
        with torch.no_grad():
            out = model(baseline + (x - baseline) * keep)[:, 0]
        table.update(zip(chunk, (out * mask).flatten(1).sum(1).tolist(), strict=True))
    return table.__getitem__
