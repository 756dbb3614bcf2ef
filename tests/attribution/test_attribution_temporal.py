"""The ``temporal`` baseline: the same patch on a cue-free date, and a clear fallback."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.attribution.export import attribution_tags
from pipeline.attribution.methods import explain
from pipeline.attribution.targets import Target
from pipeline.attribution.temporal import (
    TemporalReference,
    cue_share,
    pick_reference,
    reference_image,
    reference_input,
)
from pipeline.bands import BANDS
from pipeline.config.attribute import AttributeConfig
from pipeline.model.io import ModelMeta
from pipeline.stac.alternates import Alternate

SIDE = 16


def _alt(rank: int, scl_value: int, image: np.ndarray, item: str = "") -> Alternate:
    scl = np.full(image.shape[1:], scl_value, np.uint8)
    return Alternate(rank, item or f"S2_{rank}", f"2016-01-0{rank}T00:00:00Z", image, scl)


def _meta() -> ModelMeta:
    return ModelMeta(BANDS, (1000.0,) * len(BANDS), (500.0,) * len(BANDS))


def _patch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 10-band DN patch with a snow block, and the same ground without it."""
    rng = np.random.default_rng(0)
    ground = (1000 + 200 * rng.random((len(BANDS), SIDE, SIDE))).astype(np.float32)
    snow = np.zeros((SIDE, SIDE), bool)
    snow[2:6, 9:14] = True
    snowy = ground.copy()
    snowy[:, snow] = 8000.0
    return snowy, ground, snow


def test_pick_reference_takes_the_cue_free_date_or_says_why_not() -> None:
    _, ground, _ = _patch()
    snowy_scl = _alt(1, 11, ground)  # every pixel snow by SCL
    clear = _alt(2, 4, ground)
    assert cue_share(snowy_scl.scl) == 1.0 and cue_share(clear.scl) == 0.0
    assert pick_reference([snowy_scl, clear], 0.01) is clear
    why = pick_reference([snowy_scl], 0.01)
    assert isinstance(why, str) and "S2_1" in why and "temporal_max_cue_share" in why
    assert "fetch.alternates" in str(pick_reference([], 0.01))


def test_reference_image_matches_radiometry_and_fills_nodata() -> None:
    snowy, ground, _ = _patch()
    other = ground * np.linspace(0.9, 1.1, len(BANDS), dtype=np.float32)[:, None, None]
    other[:, 0, 0] = 0  # nodata on the other date
    ref = reference_image(snowy, _alt(1, 4, other))
    np.testing.assert_allclose(ref[:, 1:, 1:], ground[:, 1:, 1:], rtol=0.02)
    np.testing.assert_array_equal(ref[:, 0, 0], snowy[:, 0, 0])


class BandSum(nn.Module):
    """Logit = a weighted sum of the bands at each pixel (linear: IG is exact)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.linspace(0.5, 1.5, x.shape[1]).view(1, -1, 1, 1)
        return (x * w).sum(1, keepdim=True)


@pytest.mark.parametrize("method", ["integrated_gradients", "superpixel_shap"])
def test_temporal_baseline_attributes_only_what_the_cue_adds(method: str) -> None:
    snowy, ground, snow = _patch()
    meta = _meta()
    x = ((torch.as_tensor(snowy) - 1000.0) / 500.0)[None]
    ref = reference_input(snowy, [_alt(1, 4, ground, "S2_clear")], meta, x.device, 0.01)
    assert ref.x is not None and ref.item_id == "S2_clear"
    target = Target("patch", "", torch.ones(SIDE, SIDE, dtype=torch.bool))
    cfg = AttributeConfig(baseline="temporal", ig_steps=8, shap_samples=512, batch_size=256)
    labels = (np.arange(SIDE)[None, :] // 4 + 4 * (np.arange(SIDE)[:, None] // 4)).astype(int)
    res = explain(
        method, BandSum().eval(), x, target, cfg, seed=0, reference=ref, superpixels=labels
    )
    assert res.params["baseline"] == "temporal" and res.params["baseline_item"] == "S2_clear"
    assert res.baseline_score == pytest.approx(float(BandSum()(ref.x).sum()), rel=1e-5)
    assert res.completeness_gap is not None
    assert res.completeness_gap < 1e-3 * abs(res.score - res.baseline_score)
    total = float(res.values.sum())
    on_snow_sp = np.isin(labels, np.unique(labels[snow]))  # SHAP spreads over superpixels
    region = snow if method == "integrated_gradients" else on_snow_sp
    inside = float(res.values[:, torch.from_numpy(region)].sum())
    assert inside == pytest.approx(total, rel=0.05)  # what the snow added, nothing else
    tags = attribution_tags(
        res, patch_id="p1", model_sha256="0" * 64, stac_item_ids=[], gap_tolerance=0.01
    )
    assert tags["baseline"] == "temporal" and tags["baseline_item"] == "S2_clear"
    assert json.loads(tags["method_params"])["baseline_datetime"].startswith("2016-01-01")


def test_no_cue_free_date_falls_back_and_says_so_in_the_tags() -> None:
    snowy, ground, _ = _patch()
    x = ((torch.as_tensor(snowy) - 1000.0) / 500.0)[None]
    ref = reference_input(snowy, [_alt(1, 9, ground)], _meta(), x.device, 0.01)  # all cloud
    assert ref.x is None and "no acquisition clear" in ref.reason
    target = Target("patch", "", torch.ones(SIDE, SIDE, dtype=torch.bool))
    cfg = AttributeConfig(baseline="temporal", ig_steps=4)
    res = explain("integrated_gradients", BandSum().eval(), x, target, cfg, seed=0, reference=ref)
    assert res.params["baseline"] == "zeros"
    tags = attribution_tags(
        res, patch_id="p1", model_sha256="0" * 64, stac_item_ids=[], gap_tolerance=0.01
    )
    assert tags["baseline"] == "zeros"
    assert tags["baseline_fallback"].startswith("zeros instead of temporal: no acquisition clear")
    missing = explain(
        "integrated_gradients",
        BandSum().eval(),
        x,
        target,
        cfg,
        seed=0,
        reference=TemporalReference(None, reason="a mapped farm's patch has no other acquisitions"),
    )
    assert "mapped farm" in missing.params["baseline_fallback"]


def test_default_baseline_is_unchanged_by_a_reference() -> None:
    snowy, ground, _ = _patch()
    x = ((torch.as_tensor(snowy) - 1000.0) / 500.0)[None]
    ref = reference_input(snowy, [_alt(1, 4, ground)], _meta(), x.device, 0.01)
    target = Target("patch", "", torch.ones(SIDE, SIDE, dtype=torch.bool))
    cfg = AttributeConfig(ig_steps=4)
    res = explain("integrated_gradients", BandSum().eval(), x, target, cfg, seed=0, reference=ref)
    assert res.params["baseline"] == "zeros" and "baseline_fallback" not in res.params
    assert res.baseline_score == pytest.approx(0.0, abs=1e-5)
