"""Attribution methods against exact values: completeness, brute-force Shapley, autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.attribution import brute_force_shapley, composite_value

from pipeline.attribution.baselines import median_baseline
from pipeline.attribution.lshapley import lshapley_values
from pipeline.attribution.methods import METHODS, explain, reduce_channels
from pipeline.attribution.shapley import CoalitionGame, exact_shapley
from pipeline.attribution.superpixels import (
    adjacency,
    grid_superpixels,
    k_hop_neighbourhoods,
    slic_superpixels,
)
from pipeline.attribution.targets import Target, TargetForward, patch_target
from pipeline.bands import BAND_GROUPS, BANDS
from pipeline.config.attribute import AttributeConfig
from pipeline.errors import AttributionError


def box_target(h: int = 16, w: int = 16) -> Target:
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[4:11, 5:13] = True
    return Target("polygon", "a0", mask)


def blocks8() -> np.ndarray:
    """8 superpixels on a 16 x 16 patch: 2 rows x 4 columns of 8 x 4 blocks."""
    rows = np.arange(16)[:, None] // 8
    cols = np.arange(16)[None, :] // 4
    return (rows * 4 + cols).astype(np.int64)


def per_superpixel(values: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    per_pixel = values.sum(0).numpy()
    return np.array([per_pixel[labels == k].sum() for k in range(labels.max() + 1)])


def superpixel_oracle(model, x, target, labels) -> np.ndarray:
    base = median_baseline(x)
    lab = torch.as_tensor(labels)

    def player_of(s: frozenset[int]) -> torch.Tensor:
        return torch.isin(lab, torch.tensor(sorted(s), dtype=torch.long))[None, None]

    n = int(labels.max()) + 1
    value = composite_value(model, target.mask.float(), x, base, player_of, n)
    return brute_force_shapley(value, n)


@pytest.mark.parametrize("baseline", ["zeros", "median"])
def test_ig_completeness_within_one_percent(tiny_model, tiny_input, baseline) -> None:
    cfg = AttributeConfig(ig_baseline=baseline, batch_size=7)  # default 50 steps, ragged batches
    res = explain("integrated_gradients", tiny_model, tiny_input, box_target(), cfg, seed=0)
    diff = res.score - res.baseline_score
    assert abs(diff) > 0.1
    assert abs(float(res.values.sum()) - diff) == pytest.approx(res.completeness_gap, abs=1e-5)
    assert res.completeness_gap <= 0.01 * abs(diff)
    assert res.params["steps"] == 50 and res.params["baseline"] == baseline
    assert torch.allclose(res.aggregate, res.values.sum(0))


def test_ig_gap_flagged_then_closed_by_more_steps(tiny_model, tiny_input) -> None:
    """The blurred baseline's path crosses more ReLU kinks: 50 steps leave a 1.7 % gap, which
    is flagged; 200 steps close it below 1 %."""
    from pipeline.attribution.export import gap_flag

    coarse = explain(
        "integrated_gradients",
        tiny_model,
        tiny_input,
        box_target(),
        AttributeConfig(ig_baseline="blur"),
        seed=0,
    )
    assert gap_flag(coarse, 0.01) is True
    fine = explain(
        "integrated_gradients",
        tiny_model,
        tiny_input,
        box_target(),
        AttributeConfig(ig_baseline="blur", ig_steps=200, batch_size=64),
        seed=0,
    )
    assert gap_flag(fine, 0.01) is False
    assert fine.completeness_gap < coarse.completeness_gap


def test_saliency_equals_autograd(tiny_model, tiny_input) -> None:
    target = box_target()
    res = explain("saliency", tiny_model, tiny_input, target, AttributeConfig(), seed=0)
    x = tiny_input.clone().requires_grad_(True)
    (tiny_model(x)[0, 0] * target.mask).sum().backward()
    expected = x.grad[0].abs()
    torch.testing.assert_close(res.values, expected)
    torch.testing.assert_close(res.aggregate, expected.amax(0))
    with torch.no_grad():
        direct = float((tiny_model(tiny_input)[0, 0] * target.mask).sum())
    assert res.score == pytest.approx(direct)


def test_input_x_gradient_is_grad_times_input(tiny_model, tiny_input) -> None:
    target = patch_target(16, 16)
    res = explain("input_x_gradient", tiny_model, tiny_input, target, AttributeConfig(), seed=0)
    x = tiny_input.clone().requires_grad_(True)
    tiny_model(x)[0, 0].mean().backward()
    torch.testing.assert_close(res.values, (x.grad * tiny_input)[0])


def test_kernel_shap_matches_brute_force(tiny_model, tiny_input) -> None:
    labels, target = blocks8(), box_target()
    exact = superpixel_oracle(tiny_model, tiny_input, target, labels)
    cfg = AttributeConfig(shap_samples=800, batch_size=256)
    res = explain("kernel_shap", tiny_model, tiny_input, target, cfg, seed=3, superpixels=labels)
    got = per_superpixel(res.values, labels)
    # tolerance: 5 % of the largest |phi| (sampled coalitions; the fit is exact least squares)
    np.testing.assert_allclose(got, exact, atol=0.05 * np.abs(exact).max())
    assert res.gap_ratio is not None and res.gap_ratio < 0.01  # full/empty coalitions pinned


def test_shapley_sampling_matches_brute_force(tiny_model, tiny_input) -> None:
    labels, target = blocks8(), box_target()
    exact = superpixel_oracle(tiny_model, tiny_input, target, labels)
    cfg = AttributeConfig(shap_samples=9 * 60, batch_size=256)  # 60 permutations
    res = explain(
        "shapley_sampling", tiny_model, tiny_input, target, cfg, seed=0, superpixels=labels
    )
    got = per_superpixel(res.values, labels)
    np.testing.assert_allclose(got, exact, atol=0.05 * np.abs(exact).max())
    assert res.completeness_gap < 1e-3 * abs(res.score - res.baseline_score)  # exact per order


@pytest.mark.parametrize("players", ["bands", "groups"])
def test_band_shapley_equals_brute_force_exactly(tiny_model, tiny_input, players) -> None:
    target = box_target()
    base = median_baseline(tiny_input)
    if players == "bands":
        band_of = list(range(10))
    else:
        band_of = [next(g for g, n in enumerate(BAND_GROUPS) if b in BAND_GROUPS[n]) for b in BANDS]
    n = max(band_of) + 1

    def player_of(s: frozenset[int]) -> torch.Tensor:
        return torch.tensor([band_of[c] in s for c in range(10)])[None, :, None, None]

    exact = brute_force_shapley(
        composite_value(tiny_model, target.mask.float(), tiny_input, base, player_of, n), n
    )
    cfg = AttributeConfig(band_players=players, batch_size=128)
    res = explain("band_shapley", tiny_model, tiny_input, target, cfg, seed=0)
    per_band = res.values.sum((1, 2)).double().numpy()
    got = np.array([per_band[[c for c in range(10) if band_of[c] == g]].sum() for g in range(n)])
    np.testing.assert_allclose(got, exact, rtol=1e-4, atol=1e-4)
    assert res.completeness_gap < 1e-3


def test_lshapley_equals_exact_shapley_on_whole_graph(tiny_model, tiny_input) -> None:
    labels, target = blocks8(), box_target()
    exact = superpixel_oracle(tiny_model, tiny_input, target, labels)
    cfg = AttributeConfig(lshapley_hops=8, lshapley_max_exact=8, batch_size=64)
    res = explain("lshapley", tiny_model, tiny_input, target, cfg, seed=0, superpixels=labels)
    np.testing.assert_allclose(per_superpixel(res.values, labels), exact, rtol=1e-4, atol=1e-4)
    assert res.params["max_neighbourhood"] == 8 and res.completeness_gap < 1e-3


def test_lshapley_one_hop_is_shapley_of_the_restricted_game(tiny_model, tiny_input) -> None:
    labels, target = blocks8(), box_target()
    hoods = k_hop_neighbourhoods(adjacency(labels), 1)
    assert [len(h) for h in hoods] == [3, 4, 4, 3, 3, 4, 4, 3]
    base = median_baseline(tiny_input)
    lab = torch.as_tensor(labels)
    for i in (0, 5):
        hood = hoods[i]

        def player_of(s: frozenset[int], hood=hood) -> torch.Tensor:
            ids = torch.tensor([int(hood[k]) for k in sorted(s)], dtype=torch.long)
            return torch.isin(lab, ids)[None, None]

        value = composite_value(
            tiny_model, target.mask.float(), tiny_input, base, player_of, len(hood)
        )
        local = brute_force_shapley(value, len(hood))
        game = CoalitionGame(TargetForward(tiny_model, target), tiny_input, base, lab[None], 16)
        phi, stats = lshapley_values(game, hoods, max_exact=8, permutations=4, seed=0)
        assert phi[i] == pytest.approx(local[list(hood).index(i)], rel=1e-4, abs=1e-5)
        assert stats["sampled_players"] == 0


def test_exact_shapley_sums_to_total(tiny_model, tiny_input) -> None:
    target = box_target()
    base = median_baseline(tiny_input)
    game = CoalitionGame(
        TargetForward(tiny_model, target), tiny_input, base, torch.arange(10)[:, None, None], 64
    )
    phi = exact_shapley(game)
    full, empty = game.values(np.array([[True] * 10, [False] * 10]))
    assert phi.sum() == pytest.approx(full - empty, rel=1e-9)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_is_deterministic_and_nonzero(tiny_model, tiny_input, method) -> None:
    cfg = AttributeConfig(
        n_superpixels=6,
        shap_samples=64,
        lshapley_max_exact=3,
        lshapley_permutations=4,
        occlusion_window=8,
        occlusion_stride=4,
        gradcam_layer="conv1",
        ig_steps=8,
        smoothgrad_samples=4,
        batch_size=128,
    )
    a = explain(method, tiny_model, tiny_input, box_target(), cfg, seed=11)
    b = explain(method, tiny_model, tiny_input, box_target(), cfg, seed=11)
    assert torch.equal(a.values, b.values) and torch.equal(a.aggregate, b.aggregate)
    assert a.values.shape == (10, 16, 16) and a.values.dtype == torch.float32
    assert a.aggregate.shape == (16, 16) and bool(a.values.any())
    assert a.params == b.params


def test_seed_changes_sampled_methods(tiny_model, tiny_input) -> None:
    cfg = AttributeConfig(shap_samples=40, batch_size=8)
    labels = blocks8()
    a = explain(
        "kernel_shap", tiny_model, tiny_input, box_target(), cfg, seed=1, superpixels=labels
    )
    b = explain(
        "kernel_shap", tiny_model, tiny_input, box_target(), cfg, seed=2, superpixels=labels
    )
    assert not torch.equal(a.values, b.values)


def test_reduce_channels_values() -> None:
    attr = torch.tensor([[[1.0, -3.0]], [[-2.0, 1.0]]])  # (C=2, H=1, W=2)
    assert reduce_channels(attr, "max_abs").tolist() == [[2.0, 3.0]]
    assert reduce_channels(attr, "sum").tolist() == [[-1.0, -2.0]]
    assert reduce_channels(attr, "sum_abs").tolist() == [[3.0, 4.0]]
    assert reduce_channels(attr[None], "sum").shape == (1, 1, 2)
    with pytest.raises(AttributionError, match="unknown reduction"):
        reduce_channels(attr, "median")  # type: ignore[arg-type]


def test_bad_method_name(tiny_model, tiny_input) -> None:
    with pytest.raises(AttributionError, match=r"unknown attribution method 'shap'.*saliency"):
        explain("shap", tiny_model, tiny_input, box_target(), AttributeConfig(), seed=0)


def test_empty_target_is_an_error() -> None:
    with pytest.raises(AttributionError, match="empty mask"):
        Target("predicted_mask", "", torch.zeros(16, 16, dtype=torch.bool))


def test_target_off_grid_is_an_error(tiny_model, tiny_input) -> None:
    with pytest.raises(AttributionError, match="build the target on the patch grid"):
        explain("saliency", tiny_model, tiny_input, box_target(8, 8), AttributeConfig(), seed=0)


@pytest.mark.parametrize(("method", "samples"), [("kernel_shap", 9), ("shapley_sampling", 8)])
def test_shap_budget_too_small(tiny_model, tiny_input, method, samples) -> None:
    cfg = AttributeConfig(shap_samples=samples)
    with pytest.raises(AttributionError, match=r"too small|does not buy"):
        explain(method, tiny_model, tiny_input, box_target(), cfg, seed=0, superpixels=blocks8())


def test_bad_superpixels_and_gradcam_layer(tiny_model, tiny_input) -> None:
    with pytest.raises(AttributionError, match="single segment"):
        explain(
            "kernel_shap",
            tiny_model,
            tiny_input,
            box_target(),
            AttributeConfig(),
            seed=0,
            superpixels=np.zeros((16, 16), dtype=int),
        )
    with pytest.raises(AttributionError, match="no module 'nope'"):
        explain(
            "gradcam",
            tiny_model,
            tiny_input,
            box_target(),
            AttributeConfig(gradcam_layer="nope"),
            seed=0,
        )


def test_slic_superpixels_count_and_fallback(tiny_input) -> None:
    labels = slic_superpixels(tiny_input, 8, compactness=1.0)
    assert labels.shape == (16, 16) and 2 <= labels.max() + 1 <= 16
    assert set(np.unique(labels)) == set(range(labels.max() + 1))
    grid = grid_superpixels((16, 16), 16)
    assert grid.max() + 1 == 16 and (np.bincount(grid.ravel()) == 16).all()
