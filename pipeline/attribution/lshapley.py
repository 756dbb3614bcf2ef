"""L-Shapley: Shapley values restricted to each superpixel's neighbourhood in a graph.

Definition (Chen, Song, Wainwright & Jordan, "L-Shapley and C-Shapley: Efficient Model
Interpretation for Structured Data", ICLR 2019, eq. 6): for a feature ``i`` with ``k``-hop
neighbourhood ``N = N_k(i)`` (``i`` included, ``m = |N|``) in the feature graph,

    phi_i = 1/m * sum_{S subset of N minus i} 1 / C(m-1, |S|) * [v(S + i) - v(S)],

where ``v(S)`` is the model's score with the features in ``S`` kept and every other feature
(inside or outside ``N``) set to the baseline. This is the exact Shapley value of ``i`` in the
game restricted to ``N``; when ``N`` is the whole graph it is the Shapley value. Here the
features are SLIC superpixels and the graph is their 4-connected adjacency.

Neighbourhoods of at most ``max_exact`` superpixels are enumerated exactly (``2^m``
coalitions, shared between neighbours through the game's cache); larger ones are estimated
from ``permutations`` random orders of ``N`` (the marginal of ``i`` given its predecessors),
drawn from a seeded generator.
"""

from __future__ import annotations

import numpy as np

from pipeline.attribution.shapley import CoalitionGame, all_coalitions, shapley_weights


def _exact_rows(players: np.ndarray, i: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coalitions (without / with ``i``) over ``players`` and their Shapley weights."""
    others = players[players != i]
    subsets = all_coalitions(len(others))  # (2^(m-1), m-1)
    without = np.zeros((len(subsets), n), dtype=bool)
    without[:, others] = subsets
    with_i = without.copy()
    with_i[:, i] = True
    weights = shapley_weights(len(players))[subsets.sum(1)]
    return without, with_i, weights


def _sampled_rows(
    players: np.ndarray, i: int, n: int, permutations: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coalitions of ``i``'s predecessors in random orders of ``players``; equal weights."""
    without = np.zeros((permutations, n), dtype=bool)
    for row in range(permutations):
        order = rng.permutation(players)
        without[row, order[: int(np.flatnonzero(order == i)[0])]] = True
    with_i = without.copy()
    with_i[:, i] = True
    return without, with_i, np.full(permutations, 1.0 / permutations)


def lshapley_values(
    game: CoalitionGame,
    neighbourhoods: list[np.ndarray],
    *,
    max_exact: int,
    permutations: int,
    seed: int,
) -> tuple[np.ndarray, dict[str, int]]:
    """L-Shapley value of every player.

    Args:
        game: The superpixel game (players = superpixels).
        neighbourhoods: Per player, the sorted ids of its neighbourhood (itself included).
        max_exact: Neighbourhoods up to this size are enumerated exactly.
        permutations: Sampled orders per player for larger neighbourhoods.
        seed: Seed of the permutation generator.

    Returns:
        ``(phi (n,), stats)`` with counts of exact and sampled players and model evaluations.
    """
    n = game.n_players
    rng = np.random.default_rng(seed)
    plans = []
    n_exact = 0
    for i, players in enumerate(neighbourhoods):
        if len(players) <= max_exact:
            plans.append(_exact_rows(players, i, n))
            n_exact += 1
        else:
            plans.append(_sampled_rows(players, i, n, permutations, rng))
    # one pass over every distinct coalition, then per-player weighted sums
    everything = np.concatenate([np.concatenate([w, wi]) for w, wi, _ in plans])
    game.values(everything)
    phi = np.zeros(n, dtype=np.float64)
    for i, (without, with_i, weights) in enumerate(plans):
        phi[i] = np.sum(weights * (game.values(with_i) - game.values(without)))
    stats = {
        "exact_players": n_exact,
        "sampled_players": n - n_exact,
        "evaluations": game.n_evaluations,
    }
    return phi, stats
