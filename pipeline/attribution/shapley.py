"""Cooperative games over input features and their exact Shapley values.

A *player* is a group of input elements: a superpixel (all bands of its pixels), a band (all
pixels of that band) or a band group. A coalition ``S`` keeps its players' elements at the input
value and puts every other element at the baseline; the game's value ``v(S)`` is the target score
of that composite input. Exact Shapley values enumerate all ``2^n`` coalitions, so ``n`` must be
small (bands, band groups, an L-Shapley neighbourhood).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from pipeline.errors import AttributionError

#: Largest player count whose ``2^n`` coalitions are enumerated.
MAX_EXACT_PLAYERS = 16


class CoalitionGame:
    """``v(S) = f(x' + (x - x') * 1[S])`` evaluated in batches, with a cache.

    Args:
        forward: Maps ``(B, C, H, W)`` to ``(B,)`` (a :class:`TargetForward`).
        x: ``(1, C, H, W)`` input (normalized).
        baseline: ``(1, C, H, W)`` reference input, same space.
        index: Integer player id of every element, shape broadcastable to ``(C, H, W)``
            (``(1, H, W)`` for superpixels, ``(C, 1, 1)`` for bands). Ids run ``0..n-1``.
        batch_size: Composite inputs per forward pass.
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        baseline: torch.Tensor,
        index: torch.Tensor,
        batch_size: int,
    ) -> None:
        self.forward = forward
        self.x = x
        self.baseline = baseline
        self.delta = x - baseline
        self.index = index.to(device=x.device, dtype=torch.long)
        self.n_players = int(self.index.max()) + 1
        self.batch_size = batch_size
        self.cache: dict[bytes, float] = {}
        self.n_evaluations = 0

    def _evaluate(self, coalitions: np.ndarray) -> np.ndarray:
        out = np.empty(len(coalitions), dtype=np.float64)
        for start in range(0, len(coalitions), self.batch_size):
            chunk = torch.as_tensor(
                coalitions[start : start + self.batch_size],
                dtype=self.x.dtype,
                device=self.x.device,
            )
            keep = chunk[:, self.index]  # (b, *index.shape) broadcast against (C, H, W)
            with torch.no_grad():
                values = self.forward(self.baseline + self.delta * keep)
            out[start : start + len(chunk)] = values.detach().double().cpu().numpy()
        self.n_evaluations += len(coalitions)
        return out

    def values(self, coalitions: np.ndarray) -> np.ndarray:
        """``v`` of each row of ``coalitions`` ``(m, n_players)`` bool; returns ``(m,)`` float64."""
        coalitions = np.asarray(coalitions, dtype=bool)
        keys = [row.tobytes() for row in np.packbits(coalitions, axis=1)]
        missing = {k: i for i, k in enumerate(keys) if k not in self.cache}
        if missing:
            rows = np.array(list(missing.values()))
            for key, value in zip(missing, self._evaluate(coalitions[rows]), strict=True):
                self.cache[key] = float(value)
        return np.array([self.cache[k] for k in keys], dtype=np.float64)


def all_coalitions(n: int) -> np.ndarray:
    """``(2^n, n)`` bool: row ``c`` holds the bits of ``c`` (player ``i`` is bit ``i``)."""
    codes = np.arange(1 << n, dtype=np.int64)
    return ((codes[:, None] >> np.arange(n)) & 1).astype(bool)


def shapley_weights(n: int) -> np.ndarray:
    """``w[s] = s! (n - s - 1)! / n!`` for ``s = 0..n-1``: the weight of a coalition of size s."""
    return np.array(
        [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)],
        dtype=np.float64,
    )


def shapley_from_values(values: np.ndarray, n: int) -> np.ndarray:
    """Exact Shapley values from ``v`` of every coalition, indexed by its bit code.

    Args:
        values: ``(2^n,)`` game values, ``values[c]`` for the coalition with bit code ``c``.
        n: Player count.

    Returns:
        ``(n,)`` float64 Shapley values; they sum to ``v(all) - v(empty)``.
    """
    codes = np.arange(1 << n, dtype=np.int64)
    sizes = np.array([bin(c).count("1") for c in range(1 << n)])
    weights = shapley_weights(n)
    phi = np.zeros(n, dtype=np.float64)
    for i in range(n):
        without = codes[((codes >> i) & 1) == 0]
        phi[i] = np.sum(weights[sizes[without]] * (values[without | (1 << i)] - values[without]))
    return phi


def exact_shapley(game: CoalitionGame) -> np.ndarray:
    """Exact Shapley values of every player of ``game`` by enumerating all coalitions.

    Raises:
        AttributionError: more than :data:`MAX_EXACT_PLAYERS` players.
    """
    n = game.n_players
    if n > MAX_EXACT_PLAYERS:
        raise AttributionError(
            f"exact Shapley values over {n} players need 2^{n} model evaluations; at most "
            f"{MAX_EXACT_PLAYERS} players are enumerated. Use band groups or fewer players"
        )
    return shapley_from_values(game.values(all_coalitions(n)), n)


def spread_over_players(
    phi: torch.Tensor, index: torch.Tensor, shape: tuple[int, int, int]
) -> torch.Tensor:
    """Spread each player's value evenly over its elements: ``(1, C, H, W)`` density map.

    The map sums to ``phi.sum()`` and each player's elements sum to its value, so attribution
    "mass" inside any region is meaningful.

    Args:
        phi: ``(n,)`` player values.
        index: Player id per element, broadcastable to ``shape``.
        shape: ``(C, H, W)``.
    """
    full = index.to(torch.long).expand(shape)
    counts = torch.bincount(full.reshape(-1), minlength=phi.numel()).to(phi.dtype)
    per_element = phi / counts.clamp(min=1)
    return per_element[full][None]
