"""Superpixel SHAP per budget: exact by enumeration, else antithetic sampling with a standard
error, efficiency kept; its COG carries the standard error band and tags."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from pipeline.attribution.export import STD_ERROR_BANDS, attribution_tags, write_attribution
from pipeline.attribution.methods import explain
from pipeline.attribution.shapley import CoalitionGame
from pipeline.attribution.superpixel_shap import superpixel_shapley
from pipeline.attribution.targets import Target
from pipeline.audit.patches import read_attribution
from pipeline.config.attribute import AttributeConfig
from pipeline.errors import AttributionError
from pipeline.geo.raster import Grid

SIDE = 16


class PolynomialScore(nn.Module):
    """``f(x) = w.x + (u.x)(r.x) + g (u.x)(r.x)(s.x)``: a linear part, a pairwise and (when
    ``g != 0``) a three-way interaction of the elements; ``(B, C, H, W) -> (B,)``."""

    def __init__(self, channels: int = 3, g: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        shape = (4, channels, SIDE, SIDE)
        self.register_buffer("coef", torch.randn(shape, generator=gen, dtype=torch.float64))
        self.g = g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, u, r, s = (torch.einsum("bchw,chw->b", x, c) for c in self.coef)
        return w + u * r + self.g * u * r * s


def labels_of(n: int) -> np.ndarray:
    """``n`` superpixels: consecutive runs of pixels in raster order (ids in first appearance)."""
    return (np.arange(SIDE * SIDE) * n // (SIDE * SIDE)).reshape(SIDE, SIDE)


def analytic_shapley(model: PolynomialScore, x: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """Shapley values of the game on a zero baseline: every product term's coefficient goes in
    equal shares to the distinct players it involves (the Shapley value of a unanimity game)."""
    n = int(labels.max()) + 1
    per_player = np.zeros((4, n))
    for k, c in enumerate(model.coef):
        contrib = (x[0] * c).sum(0).numpy()
        per_player[k] = np.bincount(labels.ravel(), contrib.ravel(), minlength=n)
    w, u, r, s = per_player
    phi = w.copy()
    for i, j in itertools.product(range(n), repeat=2):
        for p in {i, j}:
            phi[p] += u[i] * r[j] / len({i, j})
    if model.g:
        for i, j, k in itertools.product(range(n), repeat=3):
            for p in {i, j, k}:
                phi[p] += model.g * u[i] * r[j] * s[k] / len({i, j, k})
    return phi


def toy_game(model: PolynomialScore, n: int, batch_size: int = 512) -> CoalitionGame:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, SIDE, SIDE, generator=gen, dtype=torch.float64)
    index = torch.as_tensor(labels_of(n))[None]
    return CoalitionGame(model, x, torch.zeros_like(x), index, batch_size)


def test_exact_enumeration_equals_analytic_shapley() -> None:
    model = PolynomialScore(g=0.3)
    game = toy_game(model, 8)
    est = superpixel_shapley(game, budget=256, seed=0)  # 2^8 coalitions fit the budget
    expected = analytic_shapley(model, game.x, labels_of(8))
    assert est.exact and est.permutations == 0 and est.evaluations == 256
    np.testing.assert_allclose(est.values, expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(est.std_error, 0.0)


def test_antithetic_pairs_are_exact_for_pairwise_games() -> None:
    model = PolynomialScore(g=0.0)
    game = toy_game(model, 12)
    est = superpixel_shapley(game, budget=256, seed=1)  # 2^12 > 256: sampled, 11+ pairs
    assert not est.exact and est.permutations >= 22
    assert est.evaluations <= 256
    expected = analytic_shapley(model, game.x, labels_of(12))
    np.testing.assert_allclose(est.values, expected, rtol=1e-9, atol=1e-9 * abs(expected).max())


def test_sampled_values_converge_and_their_error_is_covered() -> None:
    model = PolynomialScore(g=0.5)
    n = 14  # 2^14 coalitions exceed both budgets
    expected = analytic_shapley(model, toy_game(model, n).x, labels_of(n))
    errors = {}
    covered = []
    for budget in (200, 5000):
        worst = []
        for seed in range(8):
            est = superpixel_shapley(toy_game(model, n), budget=budget, seed=seed)
            assert not est.exact and (est.std_error > 0).all()
            err = np.abs(est.values - expected)
            worst.append(err.max())
            covered.append(err <= 3 * est.std_error)
            total = est.values.sum()
            assert total == pytest.approx(expected.sum(), rel=1e-5)  # efficiency
        errors[budget] = np.mean(worst)
    # 25 times the budget: the error shrinks (ideally 5x); the standard error covers it
    assert errors[5000] < errors[200] / 2.5
    assert np.mean(covered) >= 0.9


def test_budget_without_two_pairs_is_refused() -> None:
    with pytest.raises(AttributionError, match="shap_samples = 40"):
        superpixel_shapley(toy_game(PolynomialScore(), 12), budget=40, seed=0)


def test_efficiency_and_std_error_through_explain(tiny_model, tiny_input, tmp_path) -> None:
    mask = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    mask[4:11, 5:13] = True
    target = Target("label_farms", "w1", mask)
    labels = labels_of(12)
    cfg = AttributeConfig(shap_samples=256, batch_size=64)
    res = explain(
        "superpixel_shap", tiny_model, tiny_input, target, cfg, seed=4, superpixels=labels
    )
    diff = res.score - res.baseline_score
    assert abs(float(res.values.double().sum()) - diff) <= 1e-5 * max(abs(diff), 1.0)
    assert res.params["estimate"] == "sampled" and res.params["permutations"] >= 22
    assert res.params["evaluations"] <= 256
    assert res.std_error is not None and res.std_error.shape == (SIDE, SIDE)
    # a superpixel's standard error is spread over its pixels like its value
    per_sp = np.bincount(labels.ravel(), res.std_error.numpy().ravel().astype(np.float64))
    assert per_sp.max() == pytest.approx(res.params["max_std_error"], rel=1e-5)
    assert per_sp.max() > 0  # superpixels outside the receptive field have 0 error

    grid = Grid(rasterio.crs.CRS.from_epsg(32633), rasterio.Affine(10, 0, 5e5, 0, -10, 4e6), 16, 16)
    tags = attribution_tags(
        res, patch_id="p1", model_sha256="0" * 64, stac_item_ids=[], gap_tolerance=0.01
    )
    path = write_attribution(tmp_path / "s.tif", res, grid, tags=tags)
    with rasterio.open(path) as src:
        assert src.descriptions == STD_ERROR_BANDS
        t = src.tags()
        se_band = src.read(STD_ERROR_BANDS.index("std_error") + 1)
    assert t["shapley_estimate"] == "sampled"
    assert t["shapley_permutations"] == str(res.params["permutations"])
    assert t["shapley_samples"] == "256"
    assert float(t["max_std_error"]) == pytest.approx(res.params["max_std_error"])
    assert json.loads(t["method_params"])["estimate"] == "sampled"
    np.testing.assert_allclose(se_band, res.std_error.numpy())
    values, aggregate = read_attribution(path)  # the audit's reader: aggregate stays last
    np.testing.assert_allclose(aggregate, res.aggregate.numpy())
    np.testing.assert_allclose(values, res.values.numpy())


def test_exact_when_the_budget_affords_every_coalition(tiny_model, tiny_input) -> None:
    target = Target("patch", "", torch.ones(SIDE, SIDE, dtype=torch.bool), reduce="mean")
    cfg = AttributeConfig(shap_samples=64, batch_size=64)
    res = explain(
        "superpixel_shap", tiny_model, tiny_input, target, cfg, seed=0, superpixels=labels_of(6)
    )
    assert res.params["estimate"] == "exact" and res.params["max_std_error"] == 0.0
    assert res.std_error is not None and not bool(res.std_error.any())
    assert res.completeness_gap is not None and res.completeness_gap < 1e-5
