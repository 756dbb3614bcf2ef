"""Faithfulness on a linear stand-in model, where the right answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.attribution.targets import Target
from pipeline.audit.explainers import CheckSetup, captum_explain
from pipeline.audit.faithfulness import (
    FAITHFULNESS_COLUMNS,
    infidelity_score,
    mean_prob_fn,
    perturbation_curve,
    rank_segments,
    run_faithfulness,
    sensitivity_score,
    superpixels,
)
from pipeline.audit.model_access import ModelAccess
from pipeline.audit.sanity import Case
from pipeline.config.audit import AuditConfig


class Linear(nn.Module):
    """logit(pixel) = w . x(pixel): a 1x1 convolution with fixed weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.conv.weight[:] = torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _setup() -> tuple[Linear, Target, torch.Tensor, np.ndarray]:
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[:8, :8] = True
    x = torch.ones(1, 3, 16, 16)
    x[:, 1] = -1.0
    segments = np.arange(4).repeat(4)[None, :].repeat(16, 0) + 4 * (np.arange(16) >= 8)[:, None]
    return Linear(), Target("farm", "", mask), x, segments


def test_rank_segments() -> None:
    segs = np.array([[0, 0, 1, 1], [2, 2, 3, 3]])
    attr = np.array([[1.0, 1.0, 5.0, 5.0], [-1.0, -1.0, 2.0, 2.0]])
    assert rank_segments(attr, segs).tolist() == [1, 3, 0, 2]


def test_deletion_faster_for_the_right_ranking() -> None:
    model, target, x, segs = _setup()
    score = mean_prob_fn(model, target)
    baseline = torch.zeros_like(x)
    inside = np.unique(segs[:8, :8])
    good = np.r_[inside, np.setdiff1d(np.unique(segs), inside)]
    bad = good[::-1].copy()
    d_good = perturbation_curve(score, x, baseline, segs, good, steps=9, mode="deletion")
    d_bad = perturbation_curve(score, x, baseline, segs, bad, steps=9, mode="deletion")
    i_good = perturbation_curve(score, x, baseline, segs, good, steps=9, mode="insertion")
    assert d_good.probs[0] == pytest.approx(1 / (1 + np.exp(-3.5)))  # w.x = 1 + 2 + 0.5
    assert d_good.probs[-1] == pytest.approx(0.5)  # all removed: logit 0
    assert d_good.auc < d_bad.auc and i_good.auc > d_good.auc
    assert np.all(np.diff(d_good.fractions) > 0) and d_good.fractions[-1] == 1.0


def test_exact_gradient_has_zero_infidelity_and_sensitivity() -> None:
    model, target, x, _ = _setup()
    grad = torch.zeros_like(x)
    grad[0, :, :8, :8] = torch.tensor([1.0, -2.0, 0.5]).view(3, 1, 1)
    exact = infidelity_score(model, target, x, grad, n_samples=4)
    noisy = infidelity_score(model, target, x, torch.rand_like(x), n_samples=4)
    assert exact == pytest.approx(0.0, abs=1e-6) and noisy > 1e-3
    sens = sensitivity_score(lambda xb: grad.expand_as(xb).clone(), x, n_samples=2)
    assert sens == pytest.approx(0.0, abs=1e-7)


def test_superpixels_cover_the_patch() -> None:
    x = np.random.default_rng(0).normal(size=(4, 32, 32))
    segs = superpixels(x, 8)
    assert segs.shape == (32, 32) and segs.min() == 0 and 4 <= len(np.unique(segs)) <= 16


def test_run_faithfulness_scores_each_method_and_records_failures() -> None:
    model, target, x, _ = _setup()
    x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 0.1
    access = ModelAccess(model, lambda a: torch.as_tensor(a), 0.5, ("a", "b", "c"))
    audit = AuditConfig(
        faithfulness_steps=4,
        faithfulness_superpixels=8,
        infidelity_samples=2,
        sensitivity_samples=1,
    )
    setup = CheckSetup(access, captum_explain, audit, seed=0)
    rows, curves = run_faithfulness([Case("p0", x, target)], ["saliency", "occlusion"], setup)
    ok, failed = rows
    assert tuple(ok) == FAITHFULNESS_COLUMNS and ok["status"] == "ok"
    assert 0 <= ok["deletion_auc"] <= 1 and 0 <= ok["insertion_auc"] <= 1
    assert failed["status"] == "error" and "occlusion" in failed["reason"]
    assert tuple(failed) == FAITHFULNESS_COLUMNS[:4]
    assert [c["method"] for c in curves] == ["saliency"]  # no curves for a failed method
    assert curves[0]["fractions"][0] == 0.0 and curves[0]["fractions"][-1] == 1.0
