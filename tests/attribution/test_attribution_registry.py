"""The method registry: each declared property is what the method's output obeys."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
import torch

from pipeline.attribution.methods import (
    METHODS,
    MethodInputs,
    explain,
    reduce_channels,
    superpixel_methods,
)
from pipeline.attribution.targets import Target
from pipeline.config.attribute import AttributeConfig, MethodName
from pipeline.errors import AttributionError

CFG = AttributeConfig(
    n_superpixels=6,
    shap_samples=256,
    lshapley_hops=8,  # every neighbourhood is the whole graph: L-Shapley is Shapley
    lshapley_max_exact=8,
    occlusion_window=8,
    occlusion_stride=4,
    gradcam_layer="conv1",
    ig_steps=64,
    smoothgrad_samples=4,
    batch_size=128,
)


def box_target() -> Target:
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:11, 5:13] = True
    return Target("polygon", "a0", mask)


def test_config_method_names_are_the_registry() -> None:
    assert set(get_args(MethodName)) == set(METHODS)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_declared_properties_hold(tiny_model, tiny_input, method) -> None:
    spec = METHODS[method]
    res = explain(method, tiny_model, tiny_input, box_target(), CFG, seed=11)
    # reduction: the aggregate is the declared reduction of the bands
    assert res.params["reduction"] == spec.reduction
    torch.testing.assert_close(res.aggregate, reduce_channels(res.values, spec.reduction))
    # baseline: f(x') exists exactly for methods that declare a baseline
    assert (res.baseline_score is None) == (spec.baseline is None)
    expected = CFG.ig_baseline if spec.baseline == "configured" else spec.baseline
    assert res.params["baseline"] == expected
    # superpixels: only superpixel methods segment the patch
    assert ("n_superpixels" in res.params) == spec.superpixels
    # completeness: complete methods' values add up to f(x) - f(x'); others report no gap
    if spec.complete == "never":
        assert res.completeness_gap is None
    else:
        diff = res.score - res.baseline_score
        # within attribute.gap_tolerance's default (IG integrates numerically; the rest exact)
        assert abs(float(res.values.double().sum()) - diff) <= 0.01 * abs(diff)
        assert res.completeness_gap == pytest.approx(abs(float(res.values.double().sum()) - diff))
    # sign: unsigned maps are non-negative; signed methods give values of both signs here
    if spec.signed:
        assert bool((res.values < 0).any()) and bool((res.values > 0).any())
    else:
        assert bool((res.aggregate >= 0).all())


def test_lshapley_is_complete_only_on_the_whole_graph(tiny_model, tiny_input) -> None:
    local = CFG.model_copy(update={"lshapley_hops": 1, "n_superpixels": 12})
    res = explain("lshapley", tiny_model, tiny_input, box_target(), local, seed=0)
    assert res.params["max_neighbourhood"] < res.params["n_superpixels"]
    assert res.completeness_gap is None
    whole = explain("lshapley", tiny_model, tiny_input, box_target(), CFG, seed=0)
    assert whole.completeness_gap is not None and whole.completeness_gap < 1e-3


def test_superpixel_methods_read_the_registry() -> None:
    assert superpixel_methods(["saliency", "kernel_shap", "lshapley", "occlusion"]) == (
        "kernel_shap",
        "lshapley",
    )
    assert superpixel_methods(["saliency", "integrated_gradients"]) == ()


def test_a_method_without_a_declared_baseline_cannot_reach_one() -> None:
    inputs = MethodInputs(seed=0)
    with pytest.raises(AttributionError, match="declare one in METHODS"):
        inputs.need_baseline("occlusion")
    with pytest.raises(AttributionError, match="superpixels=True"):
        inputs.need_superpixels("kernel_shap")
    labels = np.zeros((4, 4), dtype=np.int64)
    assert MethodInputs(0, superpixels=labels).need_superpixels("kernel_shap") is labels
