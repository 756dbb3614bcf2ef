"""The evaluation pass on arrays: one patch scored, splits tallied, threshold resolved."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from pipeline.geo.raster import Grid
from pipeline.model.evaluate import ThresholdSweep, resolve_threshold, rounded, split_metrics
from pipeline.model.scoring import ScoringRules, metrics_report, score_patch, tally_splits

GRID = Grid(CRS.from_epsg(32633), Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0), 32, 32)
RULES = ScoringRules(0.5, "config", min_area_m2=0.0, match_iou=0.5)


def scene() -> tuple[np.ndarray, np.ndarray]:
    """A matched farm (rows 2-9, cols 2-9), a false positive and a missed label farm."""
    prob = np.full((32, 32), 0.1, np.float32)
    truth = np.zeros((32, 32), bool)
    prob[2:10, 2:10] = 0.9
    truth[3:10, 2:10] = True  # IoU 56/64 with the prediction
    prob[20:24, 20:24] = 0.8  # no label there
    truth[20:26, 2:8] = True  # nothing predicted there
    prob[0, 31] = np.nan  # no data: not scored
    return prob, truth


def test_score_patch_counts_pixels_objects_and_polygons() -> None:
    prob, truth = scene()
    score = score_patch(prob, truth, GRID, patch_id="p7", split="val", rules=RULES)
    assert (score.pixels.tp, score.pixels.fp, score.pixels.fn) == (56, 8 + 16, 36)
    assert score.pixels.tp + score.pixels.fp + score.pixels.fn + score.pixels.tn == 32 * 32 - 1
    assert score.match.n_pred == 2 and score.match.n_truth == 2 and len(score.match.pairs) == 1
    assert list(score.farms["matched"]) == [True, False]
    assert set(score.farms["split"]) == {"val"} and score.farms.crs == GRID.crs
    assert list(score.false_positives["id"]) == ["p7_002"]
    assert list(score.missed["id"]) == ["label_p7_002"] and list(score.missed["split"]) == ["val"]
    assert score.missed["area_m2"].iloc[0] == pytest.approx(36 * 100.0)


def test_a_perfect_patch_has_no_errors() -> None:
    truth = np.zeros((32, 32), bool)
    truth[4:12, 4:12] = True
    prob = np.where(truth, 0.9, 0.1).astype(np.float32)
    score = score_patch(prob, truth, GRID, patch_id="p1", split="train", rules=RULES)
    assert score.false_positives.empty and score.missed.empty
    assert score.pixels.iou == 1.0


def test_tally_and_metrics_report() -> None:
    prob, truth = scene()
    scores = [
        score_patch(prob, truth, GRID, patch_id=f"p{k}", split=s, rules=RULES)
        for k, s in enumerate(["val", "val", "test"])
    ]
    pixel, objects = tally_splits(scores, ("train", "val", "test"))
    assert pixel["val"].tp == 2 * 56 and pixel["train"].tp == 0
    assert (objects["val"].matched, objects["val"].n_pred) == (2, 4)
    sweeps = {s: ThresholdSweep() for s in ("train", "val", "test")}
    sweeps["val"].update(prob, truth)
    sweeps["test"].update(prob, truth)
    pixel_out, object_out = split_metrics(pixel, objects, sweeps)
    assert list(pixel_out) == list(object_out) == ["val", "test"]  # train had no pixels
    assert object_out["val"]["precision"] == 0.5
    report = metrics_report(RULES, pixel_out, object_out, 3, "abc", "abc")
    assert report["threshold_rule"] == "config" and report["model_matches_tiles"] is True
    assert report["pixel"]["val"]["iou"] == round(56 / (56 + 24 + 36), 5)
    assert metrics_report(RULES, {}, {}, 0, "abc", "xyz")["model_matches_tiles"] is False


def test_resolve_threshold_rules(caplog) -> None:
    empty = ThresholdSweep()
    assert resolve_threshold("model", 0.42, empty) == (0.42, "model")
    assert resolve_threshold(0.3, 0.42, empty) == (0.3, "config")
    assert resolve_threshold("auto", 0.42, empty) == (0.42, "model (no validation positives)")
    assert "no farm pixels" in caplog.text
    sweep = ThresholdSweep()
    truth = np.array([True, True, False, False])
    sweep.update(np.array([0.8, 0.7, 0.2, 0.1]), truth)
    threshold, rule = resolve_threshold("auto", 0.42, sweep)
    assert rule == "validation-optimal IoU" and 0.2 < threshold <= 0.7


def test_rounded_rounds_only_floats() -> None:
    assert rounded({"a": 0.123456789, "b": 3, "c": "x"}) == {"a": 0.12346, "b": 3, "c": "x"}
