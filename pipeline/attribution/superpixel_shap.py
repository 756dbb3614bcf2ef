"""Superpixel Shapley values that are as accurate as the model-evaluation budget allows.

Exact when every coalition fits the budget (``2^n <= budget``): all ``2^n`` coalitions are
enumerated (:func:`pipeline.attribution.shapley.exact_shapley`) and the standard error is 0.

Otherwise sampled with antithetic permutations (ShapleyValueSampling-style marginal
contributions, Castro et al. 2009; antithetic pairs as in Mitchell et al., "Sampling
permutations for Shapley value estimation", JMLR 2022): each random order of the players is
followed by its reverse, and a player's marginal contribution is averaged over the pair first.
For a game with at most pairwise interactions a pair is already exact, so only third and higher
order interactions leave variance. The standard error of each value is the standard deviation
of its pair averages over ``sqrt(pairs)``.

Efficiency (values sum to ``v(all) - v(empty)``, i.e. ``f(x) - f(x')``) holds for every
permutation by telescoping, so the estimate keeps it up to rounding; the remaining residual is
distributed over the players in proportion to their estimated variance (the constrained
least-squares adjustment of Covert & Lee, "Improving KernelSHAP", AISTATS 2021; equal shares
when every variance is 0), which moves exact-looking players least.

Budget: each permutation costs at most ``n - 1`` new evaluations (the empty and the full
coalition are shared through the game's cache), so ``budget`` buys at least
``(budget - 2) // (2 (n - 1))`` pairs; coalitions that repeat (small prefixes, few players) are
evaluated once, and the budget they leave buys further rounds of pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.attribution.shapley import MAX_EXACT_PLAYERS, CoalitionGame, exact_shapley
from pipeline.errors import AttributionError

#: Fewest antithetic pairs a sampled estimate uses (a standard error needs two).
MIN_PAIRS = 2
#: Most rounds of pairs drawn to spend budget left over by repeated coalitions.
MAX_ROUNDS = 8


@dataclass(frozen=True)
class ShapleyEstimate:
    """Shapley values of a game's players and how they were obtained.

    Attributes:
        values: ``(n,)`` float64 Shapley values; they sum to ``v(all) - v(empty)``.
        std_error: ``(n,)`` float64 standard error of each value (0 when exact).
        exact: Whether every coalition was enumerated.
        permutations: Sampled permutations (both members of every pair); 0 when exact.
        evaluations: Model evaluations spent (distinct coalitions).
        residual: ``v(all) - v(empty) - sum(values)`` before the efficiency adjustment.
    """

    values: np.ndarray
    std_error: np.ndarray
    exact: bool
    permutations: int
    evaluations: int
    residual: float

    def tags(self, budget: int) -> dict[str, object]:
        """The estimate's provenance for raster tags."""
        return {
            "estimate": "exact" if self.exact else "sampled",
            "samples": budget,
            "permutations": self.permutations,
            "evaluations": self.evaluations,
            "max_std_error": float(self.std_error.max(initial=0.0)),
            "efficiency": "variance-weighted residual",
        }


def exact_affordable(n: int, budget: int) -> bool:
    """Whether all ``2^n`` coalitions of ``n`` players fit ``budget`` evaluations."""
    return n <= MAX_EXACT_PLAYERS and (1 << n) <= budget


def affordable_pairs(n: int, budget: int) -> int:
    """Antithetic permutation pairs that ``budget`` evaluations buy for ``n`` players."""
    return max(0, budget - 2) // (2 * max(1, n - 1))


def paired_permutations(n: int, pairs: int, rng: np.random.Generator) -> np.ndarray:
    """``(2 pairs, n)`` orders of ``0..n-1``: each random order followed by its reverse."""
    orders = np.stack([rng.permutation(n) for _ in range(pairs)]) if pairs else np.empty((0, n))
    out = np.empty((2 * pairs, n), dtype=np.int64)
    out[0::2] = orders
    out[1::2] = orders[:, ::-1]
    return out


def prefix_coalitions(orders: np.ndarray) -> np.ndarray:
    """``(m, n + 1, n)`` bool: row ``k`` of order ``p`` holds its first ``k`` players."""
    n = orders.shape[1]
    ranks = np.argsort(orders, axis=1)  # rank of each player in each order
    return ranks[:, None, :] < np.arange(n + 1)[None, :, None]


def marginal_contributions(orders: np.ndarray, prefix_values: np.ndarray) -> np.ndarray:
    """``(m, n)`` marginal contribution of each player in each order.

    Args:
        orders: ``(m, n)`` player orders.
        prefix_values: ``(m, n + 1)`` game values of each order's prefixes (sizes ``0..n``).
    """
    out = np.empty(orders.shape, dtype=np.float64)
    np.put_along_axis(out, orders, np.diff(prefix_values, axis=1), axis=1)
    return out


def pair_mean_and_error(marginals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over antithetic pairs of ``(2 pairs, n)`` marginals.

    Raises:
        AttributionError: fewer than :data:`MIN_PAIRS` pairs.
    """
    pairs = (marginals[0::2] + marginals[1::2]) / 2
    if len(pairs) < MIN_PAIRS:
        raise AttributionError(f"a standard error needs {MIN_PAIRS} pairs, got {len(pairs)}")
    return pairs.mean(axis=0), pairs.std(axis=0, ddof=1) / np.sqrt(len(pairs))


def distribute_residual(values: np.ndarray, variance: np.ndarray, total: float) -> np.ndarray:
    """``values`` shifted to sum to ``total``, the residual shared in proportion to ``variance``
    (equally when every variance is 0)."""
    weights = np.full(len(values), 1.0 / len(values)) if variance.sum() <= 0 else variance
    weights = weights / weights.sum()
    return values + weights * (total - values.sum())


def sampled_shapley(game: CoalitionGame, budget: int, seed: int) -> ShapleyEstimate:
    """Antithetic permutation estimate within ``budget`` evaluations.

    Pairs are drawn in rounds, each evaluated in one batched pass: the first round as many as
    the budget buys, then more while coalitions seen before (cached) leave budget over, for at
    most :data:`MAX_ROUNDS` rounds.

    Raises:
        AttributionError: fewer than :data:`MIN_PAIRS` pairs.
    """
    n = game.n_players
    rng = np.random.default_rng(seed)
    orders, prefixes = [], []
    pairs = affordable_pairs(n, budget)
    for _ in range(MAX_ROUNDS):
        if pairs < 1:
            break
        drawn = paired_permutations(n, pairs, rng)
        values = game.values(prefix_coalitions(drawn).reshape(-1, n))
        orders.append(drawn)
        prefixes.append(values.reshape(len(drawn), n + 1))
        pairs = affordable_pairs(n, budget - game.n_evaluations + 2)
    order, prefix = np.concatenate(orders), np.concatenate(prefixes)
    mean, error = pair_mean_and_error(marginal_contributions(order, prefix))
    total = float(prefix[0, -1] - prefix[0, 0])
    values = distribute_residual(mean, error**2, total)
    return ShapleyEstimate(
        values, error, False, len(order), game.n_evaluations, total - float(mean.sum())
    )


def superpixel_shapley(game: CoalitionGame, budget: int, seed: int) -> ShapleyEstimate:
    """Shapley values of ``game``'s players within ``budget`` model evaluations.

    Args:
        game: The coalition game (players = superpixels, or any player grouping).
        budget: Model evaluations allowed (``attribute.shap_samples``).
        seed: Seed of the permutation generator.

    Raises:
        AttributionError: the budget buys neither every coalition nor two antithetic pairs.
    """
    n = game.n_players
    if exact_affordable(n, budget):
        values = exact_shapley(game)
        return ShapleyEstimate(values, np.zeros(n), True, 0, game.n_evaluations, 0.0)
    pairs = affordable_pairs(n, budget)
    if pairs < MIN_PAIRS:
        need = 2 + 2 * MIN_PAIRS * (n - 1)
        raise AttributionError(
            f"superpixel_shap: attribute.shap_samples = {budget} buys neither all 2^{n} "
            f"coalitions of {n} superpixels nor {MIN_PAIRS} antithetic permutation pairs "
            f"({need} evaluations). Raise attribute.shap_samples to {need} or lower "
            "attribute.n_superpixels"
        )
    return sampled_shapley(game, budget, seed)
