"""Sanity checks with a stand-in conv model: similarity helpers, cascades, shuffled labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.attribution.targets import Target
from pipeline.audit import sanity as san
from pipeline.audit.explainers import captum_explain


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 1, 1),
    ).eval()


def _case(seed: int = 0) -> san.Case:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 24, 24, generator=gen)
    # the whole patch: a small target would make every map share its zero-gradient support
    return san.Case(f"p{seed}", x, Target("patch", "", torch.ones(24, 24, dtype=torch.bool)))


def test_similarity_helpers_on_known_maps() -> None:
    a = np.arange(64, dtype=float).reshape(8, 8)
    assert san.spearman_abs(a, a) == pytest.approx(1.0)
    assert san.spearman_abs(a, -a) == pytest.approx(1.0)  # absolute values
    assert san.spearman_abs(a, 63 - a) == pytest.approx(-1.0)
    assert san.spearman_abs(a, np.zeros_like(a)) == 0.0  # a constant map keeps nothing
    assert san.ssim_abs(a, a) == pytest.approx(1.0)
    assert san.ssim_abs(a, 63 - a) < 0
    assert san.abs_map(np.stack([a, -2 * a])).max() == 126


def test_cascade_goes_from_head_down_and_leaves_the_model_alone() -> None:
    model = _model()
    before = [p.clone() for p in model.parameters()]
    names = [name for name, _ in san.cascade_layers(model)]
    assert names == ["4", "2", "0"]
    steps = list(san.randomization_cascade(model, 3, seed=0))
    assert [label for label, _ in steps] == ["4", "2", "0"]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_saliency_passes_model_randomization() -> None:
    explain = captum_explain  # the local captum saliency (the integration point's fallback)
    out = san.model_randomization(
        explain, _model(), ["saliency"], [_case(0), _case(1)], steps=3, seed=0, max_similarity=0.5
    )
    rho = out["methods"]["saliency"]["spearman"]
    assert len(rho) == 3 and rho[-1] < 0.5
    assert out["methods"]["saliency"]["pass"] is True


def test_model_independent_explainer_fails() -> None:
    def edge_detector(method, model, x, target, seed):  # ignores the model entirely
        return np.abs(x[0].numpy())

    out = san.model_randomization(
        edge_detector, _model(), ["edges"], [_case(0)], steps=2, seed=0, max_similarity=0.5
    )
    assert out["methods"]["edges"]["spearman"] == [pytest.approx(1.0)] * 2
    assert out["methods"]["edges"]["pass"] is False


def test_shuffled_labels_training() -> None:
    masks = torch.stack([torch.full((24, 24), float(i)) for i in range(4)])
    shuffled = san.shuffle_labels(masks, seed=0)
    assert all(not torch.equal(shuffled[i], masks[i]) for i in range(4))  # a derangement
    model = _model()
    before = [p.clone() for p in model.parameters()]
    images = torch.randn(4, 4, 24, 24, generator=torch.Generator().manual_seed(0))
    trained, loss = san.train_shuffled(model, images, (masks > 1).float(), steps=3, seed=0)
    assert np.isfinite(loss) and not trained.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    res = san.data_randomization(
        captum_explain, model, trained, ["saliency"], [_case(0)], seed=0, max_similarity=0.5
    )
    assert set(res["saliency"]) == {"spearman", "ssim", "pass"}
    assert -1.0 <= res["saliency"]["spearman"] <= 1.0
