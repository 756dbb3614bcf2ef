"""Real-background counterfactual: the cue's pixels taken from another, clear acquisition."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from affine import Affine
from rasterio.crs import CRS
from torch import nn

from pipeline.audit.counterfactual import run_counterfactual
from pipeline.audit.cues import CueMask
from pipeline.audit.flags import flag_table, verdict_in_words, with_verdict
from pipeline.audit.model_access import ModelAccess
from pipeline.audit.patches import PatchData
from pipeline.audit.temporal import choose_alternate, clear_of, temporal_cases, with_temporal
from pipeline.bands import BANDS
from pipeline.config.audit import AuditConfig
from pipeline.geo.raster import Grid
from pipeline.stac.alternates import Alternate, match_gain

H = W = 48
SOIL, FARM, SNOW = 1000.0, 400.0, 8000.0


class UsesSnow(nn.Module):
    """Local darkness says "farm"; a bright scene (snow anywhere) adds to every pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = 2.0 - 4.0 * x[:, :1]
        scene = 6.0 * (x[:, 1:2].mean(dim=(2, 3), keepdim=True) - 1.0)
        return local + scene


class IgnoresSnow(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 - 4.0 * x[:, :1]


def _normalize(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a / 1000.0, dtype=torch.float32)


def _ground() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soil with a gentle gradient and a dark farm (10 bands), and where snow is planted."""
    img = np.full((len(BANDS), H, W), SOIL, np.float32) + np.arange(W, dtype=np.float32)
    farm = np.zeros((H, W), bool)
    farm[16:32, 4:16] = True
    img[:, farm] = FARM
    snow = np.zeros((H, W), bool)
    snow[16:32, 20:28] = True  # room to turn it about the farm (a placebo)
    return img, farm, snow


def _alternate(rank: int, gain: float, scl_at_snow: int, item: str) -> Alternate:
    ground, _, snow = _ground()
    scl = np.full((H, W), 4, np.uint8)
    scl[snow] = scl_at_snow
    image = ground * gain
    if scl_at_snow == 11:
        image[:, snow] = SNOW  # the snow is still there
    return Alternate(rank, item, f"2016-01-0{rank + 8}T15:50:00Z", image.astype(np.uint16), scl)


def _patch(alternates: tuple[Alternate, ...]) -> tuple[PatchData, np.ndarray]:
    img, farm, snow = _ground()
    img[:, snow] = SNOW
    grid = Grid(CRS.from_epsg(32618), Affine(10.0, 0, 0.0, 0, -10.0, 0.0), H, W)
    cues = {"snow": CueMask("snow", snow, "scl")}
    valid = np.ones((H, W), bool)
    return PatchData("p0", img, BANDS, grid, valid, farm, farm.copy(), cues, alternates), farm


def _audit() -> AuditConfig:
    return AuditConfig(background_radius_m=30.0, buffer_m=20.0, counterfactual_logit=1.0)


ROW = {"target": "label_farms", "target_id": "w1", "cue": "snow"}


def _columns(model: nn.Module, alternates: tuple[Alternate, ...]) -> dict:
    p, farm = _patch(alternates)
    access = ModelAccess(model, _normalize, 0.5, BANDS)
    inpainting = run_counterfactual(ROW, [(p, farm)], access, _audit())
    return with_temporal(ROW, [(p, farm)], access, _audit(), inpainting)


def test_match_gain_recovers_a_per_band_gain() -> None:
    ground, _, _ = _ground()
    gains = np.linspace(0.8, 1.2, len(BANDS), dtype=np.float32)
    other = ground / gains[:, None, None]
    found = match_gain(ground, other, np.ones((H, W), bool))
    np.testing.assert_allclose(found, gains, rtol=1e-4)
    assert (match_gain(ground, other, np.zeros((H, W), bool)) == 1).all()  # too few pixels


def test_the_cue_is_replaced_with_the_same_ground_on_the_clear_date() -> None:
    clear = _alternate(1, 1.03, 4, "S2_clear")
    p, farm = _patch((clear,))
    prepared = temporal_cases(ROW, [(p, farm)], BANDS, _audit())
    assert not isinstance(prepared, str)
    image, image_cf, _ = prepared.usable[0]
    ground, _, snow = _ground()
    # the real ground under the snow (gradient included), scaled back to the patch's radiometry
    np.testing.assert_allclose(image_cf[:, snow], ground[:, snow], rtol=2e-3)
    np.testing.assert_array_equal(image_cf[:, ~snow], image[:, ~snow])
    assert prepared.items == ["S2_clear"] and prepared.dates == ["2016-01-09T15:50:00Z"]


def test_both_counterfactuals_confirm_a_model_that_uses_snow() -> None:
    cols = _columns(UsesSnow(), (_alternate(1, 1.02, 4, "S2_clear"),))
    assert cols["cf_status"] == "ok" and cols["moved"] is True
    assert cols["counterfactuals"] == "inpainting_and_temporal"
    assert cols["temporal_status"] == "ok" and json.loads(cols["temporal_items"]) == ["S2_clear"]
    assert cols["temporal_logit_change"] < -1.0 and cols["temporal_moved"] is True
    # the placebo (same blob turned onto plain ground, also from the clear date) barely moves it
    assert cols["temporal_specific"] is True and cols["specific"] is True
    assert abs(cols["temporal_placebo_logit_change"]) < 0.05
    assert cols["counterfactuals_agree"] is True
    assert cols["temporal_replaced"] == 16 * 8


def test_both_leave_a_model_that_ignores_snow_unconfirmed() -> None:
    cols = _columns(IgnoresSnow(), (_alternate(1, 1.02, 4, "S2_clear"),))
    assert cols["moved"] is False and cols["temporal_moved"] is False
    assert abs(cols["temporal_logit_change"]) < 1e-3 and cols["counterfactuals_agree"] is True


@pytest.mark.parametrize(
    ("alternates", "reason"),
    [
        ((), "no other acquisition"),
        ((_alternate(1, 1.0, 11, "S2_snowy"),), "best 0% on S2_snowy"),
        ((_alternate(1, 1.0, 9, "S2_cloudy"),), "best 0% on S2_cloudy"),
    ],
)
def test_no_clear_second_acquisition_gives_the_inpainting_counterfactual_only(
    alternates: tuple[Alternate, ...], reason: str
) -> None:
    cols = _columns(UsesSnow(), alternates)
    assert cols["cf_status"] == "ok" and cols["moved"] is True  # inpainting still ran
    assert cols["counterfactuals"] == "inpainting_only"
    assert cols["temporal_status"] == "no_clear_acquisition" and reason in cols["temporal_reason"]
    assert cols["counterfactuals_agree"] is None


def test_the_clearest_acquisition_is_chosen_and_clear_of_both_cue_and_cloud() -> None:
    snowy, clear = _alternate(1, 1.0, 11, "S2_snowy"), _alternate(2, 1.0, 4, "S2_clear")
    p, _ = _patch((snowy, clear))
    snow = p.cues["snow"].mask
    assert not clear_of(snowy, "snow", _audit())[snow].any()
    assert clear_of(clear, "snow", _audit())[snow].all()
    assert not clear_of(_alternate(1, 1.0, 9, "c"), "snow", _audit())[snow].any()
    choice = choose_alternate(p, "snow", snow, _audit())
    assert not isinstance(choice, str) and choice.alternate.item_id == "S2_clear"


def test_flag_table_reports_both_verdicts_and_the_acquisition() -> None:
    cols = _columns(UsesSnow(), (_alternate(1, 1.02, 4, "S2_clear"),))
    row = {**ROW, "computable": True, "cue_present": True, "flagged": True, "method": "ig"}
    out = with_verdict(row, cols)
    assert out["verdict"] == "confirmed" and out["temporal_verdict"] == "confirmed"
    words = verdict_in_words({**out, "enrichment": 5.0, "effect": 0.3}, _audit())
    assert "on real background (S2_clear)" in words and "agreeing with inpainting" in words
    only = with_verdict(row, _columns(UsesSnow(), ()))
    assert only["temporal_verdict"] == "" and only["counterfactuals"] == "inpainting_only"
    assert "inpainting counterfactual only" in verdict_in_words(
        {**only, "enrichment": 5.0, "effect": 0.3}, _audit()
    )
    table = flag_table([], lambda r: cols, scope="flagged")
    for column in ("temporal_verdict", "counterfactuals_agree", "temporal_items"):
        assert column in table.columns
