"""Counterfactual: background replacement, and stand-in models that do / do not use snow;
the driver that runs one farm's counterfactual and placebo over its patches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from affine import Affine
from rasterio.crs import CRS
from torch import nn

from pipeline.attribution.targets import Target
from pipeline.audit.counterfactual import (
    counterfactual,
    farm_cases,
    iou,
    mask_centre,
    placebo_columns,
    placebo_mask,
    pooled_counterfactual,
    remove_cue,
    run_counterfactual,
    usable_cue,
)
from pipeline.audit.cues import CueMask
from pipeline.audit.model_access import ModelAccess
from pipeline.audit.patches import PatchData
from pipeline.config.audit import AuditConfig
from pipeline.geo.raster import Grid

H = W = 48
SNOW_DN, SOIL_DN, FARM_DN = 8000.0, 1000.0, 400.0


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    img = np.full((3, H, W), SOIL_DN, np.float32)
    img += np.arange(W, dtype=np.float32)[None, None, :]  # a gentle gradient across
    farm = np.zeros((H, W), bool)
    farm[16:32, 4:16] = True
    snow = np.zeros((H, W), bool)
    snow[14:34, 20:30] = True
    img[:, farm] = FARM_DN
    img[:, snow] = SNOW_DN
    return img, farm, snow


class UsesSnow(nn.Module):
    """Local darkness says "farm", and a global bright-scene term adds to every pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = 2.0 - 4.0 * x[:, :1]  # dark pixels (x < 0.5) -> positive logit
        scene = 6.0 * (x[:, 1:2].mean(dim=(2, 3), keepdim=True) - 1.0)
        return local + scene


class LocalOnly(nn.Module):
    """A 1x1 rule: the logit at a pixel depends on that pixel only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 - 4.0 * x[:, :1]


def _normalize(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a / 1000.0, dtype=torch.float32)


def test_remove_cue_uses_local_background_and_protects_farms() -> None:
    img, farm, snow = _scene()
    valid = np.ones((H, W), bool)
    valid[0, :] = False
    img[:, 0, :] = 0
    out = remove_cue(img, snow | farm, valid, farm, radius_px=3)
    ring_cols = np.r_[17:20, 30:33]  # 3 px either side of the snow's columns 20-29
    expected = np.median(SOIL_DN + ring_cols)
    assert np.allclose(out[:, snow], expected, atol=2.0)  # local median, not the patch mean
    assert np.array_equal(out[:, farm], img[:, farm])  # farms never touched
    assert np.array_equal(out[:, 0, :], img[:, 0, :])  # nodata never touched
    assert np.array_equal(out[:, ~snow], img[:, ~snow])


def _run(model: nn.Module) -> tuple[float, bool, float]:
    img, farm, snow = _scene()
    cf_img = remove_cue(img, snow, np.ones((H, W), bool), farm, radius_px=3)
    res = counterfactual(
        model,
        _normalize,
        img,
        cf_img,
        Target("label_farms", "w1", torch.from_numpy(farm)),
        threshold=0.5,
        near_px=3,
        prob_threshold=0.1,
        iou_threshold=0.5,
    )
    assert res.n_replaced == int(snow.sum())
    return res.prob_change, res.moved, res.score_change


def test_model_relying_on_snow_is_confirmed() -> None:
    change, moved, score_change = _run(UsesSnow())
    assert moved and change < -0.3 and score_change < -0.5


def test_model_ignoring_snow_is_unconfirmed() -> None:
    change, moved, score_change = _run(LocalOnly())
    assert not moved and change == pytest.approx(0.0, abs=1e-6)
    assert score_change == pytest.approx(0.0, abs=1e-6)


def test_iou() -> None:
    a = np.zeros((4, 4), bool)
    b = a.copy()
    assert iou(a, b) == 1.0
    a[0, :2] = True
    b[0, 1:3] = True
    assert iou(a, b) == pytest.approx(1 / 3)


def test_pooled_counterfactual_weighs_each_patch_by_its_share_of_the_farm() -> None:
    # the farm spans two patches; its snow lies in the second only
    img_b, farm_b, snow_b = _scene()
    img_a = np.full_like(img_b, SOIL_DN)
    farm_a = np.zeros((H, W), bool)
    farm_a[8:40, 4:40] = True  # most of the farm is here, far from any snow
    img_a[:, farm_a] = FARM_DN
    valid = np.ones((H, W), bool)
    cases = [
        (img_a, remove_cue(img_a, np.zeros((H, W), bool), valid, farm_a, 3), farm_a),
        (img_b, remove_cue(img_b, snow_b, valid, farm_b, 3), farm_b),
    ]
    kw = {"threshold": 0.5, "near_px": 3, "prob_threshold": 0.1, "iou_threshold": 0.5}
    singles = [
        counterfactual(
            UsesSnow(), _normalize, i, c, Target("label_farms", "w1", torch.from_numpy(m)), **kw
        )
        for i, c, m in cases
    ]
    pooled = pooled_counterfactual(
        UsesSnow(),
        _normalize,
        [(i, c, Target("label_farms", "w1", torch.from_numpy(m))) for i, c, m in cases],
        **kw,
    )
    n_a, n_b = int(farm_a.sum()), int(farm_b.sum())
    assert singles[0].prob_change == pytest.approx(0.0, abs=1e-6) and singles[1].moved
    expected = (n_a * singles[0].prob_change + n_b * singles[1].prob_change) / (n_a + n_b)
    assert pooled.prob_change == pytest.approx(expected, abs=1e-6)
    assert pooled.score == pytest.approx(singles[0].score + singles[1].score, rel=1e-5)
    assert pooled.n_replaced == int(snow_b.sum())


class ConfidentUsesSnow(nn.Module):
    """Very confident on dark pixels; bright snow in the scene adds two nats of evidence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = 12.0 - 16.0 * x[:, :1]
        snow = 2.0 * (x[:, 1:2] > 4.0).any(dim=3, keepdim=True).any(dim=2, keepdim=True)
        return local + snow


def test_log_odds_test_sees_reliance_that_probability_saturation_hides() -> None:
    img, farm, snow = _scene()
    cf_img = remove_cue(img, snow, np.ones((H, W), bool), farm, radius_px=3)
    target = Target("label_farms", "w1", torch.from_numpy(farm))
    kw = {"threshold": 0.5, "near_px": 3, "prob_threshold": 0.1, "iou_threshold": 0.5}
    with_odds = counterfactual(
        ConfidentUsesSnow(), _normalize, img, cf_img, target, logit_threshold=1.0, **kw
    )
    without = counterfactual(ConfidentUsesSnow(), _normalize, img, cf_img, target, **kw)
    assert abs(with_odds.prob_change) < 0.01  # 0.9995 -> 0.996: probability barely moves
    assert with_odds.logit_change == pytest.approx(-2.0, abs=1e-4)
    assert with_odds.moved and with_odds.moved_by == ("log_odds",)
    assert not without.moved and without.moved_by == ()


def _small_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_scene` with a smaller snow blob, leaving room to turn it about the farm."""
    img, farm, snow = _scene()
    img[:, snow] = SOIL_DN + np.arange(W, dtype=np.float32)[None, :][:, np.nonzero(snow)[1]]
    small = np.zeros((H, W), bool)
    small[16:32, 20:28] = True
    img[:, small] = SNOW_DN
    return img, farm, small


def test_placebo_mask_moves_each_blob_to_background_at_the_same_distance() -> None:
    _, farm, snow = _small_scene()
    allowed = np.ones((H, W), bool) & ~farm
    allowed[:, 36:] = False  # and not at the right edge
    fake = placebo_mask(snow, (24.0, 10.0), allowed)
    assert fake.sum() == snow.sum()  # same area (a quarter turn keeps the shape)
    assert not (fake & farm).any() and not (fake & ~allowed).any()
    assert not (fake & snow).any()
    dist = lambda m: np.hypot(*(np.argwhere(m).mean(0) - (24, 10)))  # noqa: E731
    assert dist(fake) == pytest.approx(dist(snow), abs=0.75)
    nowhere = placebo_mask(snow, (24.0, 10.0), np.zeros((H, W), bool))
    assert not nowhere.any()  # no room: the blob is left out, never squeezed in


class DislikesFlatContext(nn.Module):
    """Dark pixels are farm, and any flat (edited) context lowers every logit alike."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = 2.0 - 4.0 * x[:, :1]
        flat = (x[:, 1:2, :, 1:] == x[:, 1:2, :, :-1]).float().mean(dim=(2, 3), keepdim=True)
        return local - 40.0 * flat


def _cue_and_placebo(model: nn.Module) -> dict[str, float | int | bool | None]:
    img, farm, snow = _small_scene()
    rng = np.random.default_rng(0)
    img[:, snow] += rng.uniform(0, 500, size=(3, int(snow.sum()))).astype(np.float32)
    valid = np.ones((H, W), bool)
    target = Target("label_farms", "w1", torch.from_numpy(farm))
    kw = {"threshold": 0.5, "near_px": 3, "prob_threshold": 0.1, "iou_threshold": 0.5}
    kw["logit_threshold"] = 1.0
    fake = placebo_mask(snow, (24.0, 10.0), valid & ~farm & ~snow)
    cue = counterfactual(
        model, _normalize, img, remove_cue(img, snow, valid, farm, 3), target, **kw
    )
    placebo = counterfactual(
        model, _normalize, img, remove_cue(img, fake, valid, farm | snow, 3), target, **kw
    )
    assert cue.moved and fake.sum() == snow.sum()  # the same area, edited alike
    return placebo_columns(placebo, cue, ratio=2.0)


def test_placebo_separates_reliance_on_the_cue_from_reacting_to_any_edit() -> None:
    assert _cue_and_placebo(UsesSnow())["specific"] is True
    control = _cue_and_placebo(DislikesFlatContext())
    assert control["specific"] is False  # the same edit on plain background moves it as much
    assert control["placebo_logit_change"] < -1.0


def test_no_placebo_leaves_the_verdict_to_the_counterfactual() -> None:
    img, farm, _ = _scene()
    target = Target("label_farms", "w1", torch.from_numpy(farm))
    res = counterfactual(
        UsesSnow(),
        _normalize,
        img,
        img,
        target,
        threshold=0.5,
        near_px=3,
        prob_threshold=0.1,
        iou_threshold=0.5,
    )
    assert placebo_columns(None, res, 2.0)["specific"] is None


BANDS3 = ("a", "b", "c")


def _patch(pid: str, bands: tuple[str, ...] = BANDS3) -> tuple[PatchData, np.ndarray]:
    """:func:`_small_scene` as an audited patch (10 m grid) and its farm's mask."""
    img, farm, snow = _small_scene()
    grid = Grid(CRS.from_epsg(32618), Affine(10.0, 0, 0.0, 0, -10.0, 0.0), H, W)
    cues = {
        "snow": CueMask("snow", snow, "scl"),
        "water": CueMask("water", None, "ndwi", "no B08 here"),
    }
    valid = np.ones((H, W), bool)
    return PatchData(pid, img, bands, grid, valid, farm, farm.copy(), cues), farm


def _audit() -> AuditConfig:
    return AuditConfig(background_radius_m=30.0, buffer_m=20.0, counterfactual_logit=1.0)


def test_farm_cases_largest_part_first_and_only_where_the_farm_is() -> None:
    (p0, farm), (p1, _) = _patch("p0"), _patch("p1")
    part = np.zeros_like(farm)
    part[16:20, 4:8] = True
    masks = {("p0", "label_farms", "w1"): part, ("p1", "label_farms", "w1"): farm}
    row = {"target": "label_farms", "target_id": "w1", "patch_ids": json.dumps(["p0", "p1", "p2"])}
    cases = farm_cases(row, {"p0": p0, "p1": p1}, masks)
    assert [(p.patch_id, m is farm) for p, m in cases] == [("p1", True), ("p0", False)]
    assert mask_centre(part) == (17.5, 5.5) and mask_centre(np.zeros_like(part)) == (0.0, 0.0)


def test_usable_cue_says_why_a_patch_cannot_take_part() -> None:
    p, _ = _patch("p0")
    assert usable_cue(p, "snow", BANDS3) is p.cues["snow"].mask
    assert usable_cue(p, "water", BANDS3) == "p0: no B08 here"
    assert "differ from the model's" in str(usable_cue(p, "snow", ("x", "y", "z")))


def test_run_counterfactual_removes_the_cue_and_its_placebo() -> None:
    p, farm = _patch("p0")
    access = ModelAccess(UsesSnow(), _normalize, 0.5, BANDS3)
    row = {"target": "label_farms", "target_id": "w1", "cue": "snow"}
    cols = run_counterfactual(row, [(p, farm)], access, _audit())
    snow = p.cues["snow"].mask
    direct = counterfactual(
        UsesSnow(),
        _normalize,
        p.image,
        remove_cue(p.image, snow, p.valid, farm, radius_px=3),
        Target("label_farms", "w1", torch.from_numpy(farm)),
        threshold=0.5,
        near_px=3,
        prob_threshold=0.1,
        iou_threshold=0.5,
        logit_threshold=1.0,
    )
    assert cols["cf_status"] == "ok" and json.loads(cols["cf_patch"]) == ["p0"]
    assert cols["n_replaced"] == int(snow.sum()) == direct.n_replaced
    assert cols["prob_change"] == pytest.approx(direct.prob_change)
    # the same blob turned about the farm (pixels already at the background median stay put)
    assert 0.9 * snow.sum() <= cols["placebo_replaced"] <= snow.sum()
    assert cols["specific"] is True and cols["moved"] is True
    assert json.loads(cols["moved_by"]) == list(direct.moved_by)


def test_run_counterfactual_skips_patches_it_cannot_use() -> None:
    p, farm = _patch("p0")
    q, _ = _patch("q0", ("x", "y", "z"))
    access = ModelAccess(UsesSnow(), _normalize, 0.5, BANDS3)
    row = {"target": "label_farms", "target_id": "w1", "cue": "water"}
    skipped = run_counterfactual(row, [(p, farm), (q, farm)], access, _audit())
    assert skipped["cf_status"] == "skipped" and "p0: no B08 here" in skipped["cf_reason"]
    assert "q0: patch bands" in skipped["cf_reason"]
    row["cue"] = "snow"
    partial = run_counterfactual(row, [(q, farm), (p, farm)], access, _audit())
    assert partial["cf_status"] == "ok" and json.loads(partial["cf_patch"]) == ["p0"]
    assert partial["cf_reason"].startswith("q0: patch bands")
    no_placebo = run_counterfactual(
        row, [(p, farm)], access, _audit().model_copy(update={"placebo_ratio": 0})
    )
    assert no_placebo["specific"] is None and no_placebo["placebo_replaced"] == 0
