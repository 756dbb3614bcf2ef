"""Polygons, pixel and object metrics, thresholds, augmentations, configs, encoder weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine
from rasterio.crs import CRS

from pipeline.bands import BANDS
from pipeline.config import load_config
from pipeline.errors import ConfigError, ModelError
from pipeline.geo.raster import Grid
from pipeline.model.data import dihedral, read_band_stats
from pipeline.model.evaluate import (
    ObjectCounts,
    ThresholdSweep,
    components,
    match_objects,
    pixel_counts,
)
from pipeline.model.io import Arch, build_unet
from pipeline.model.module import load_encoder_weights
from pipeline.model.polygons import mask_to_polygons

GRID = Grid(CRS.from_epsg(32618), Affine(10.0, 0.0, 440_000.0, 0.0, -10.0, 4_170_000.0), 64, 64)


def test_polygons_from_known_mask_have_expected_areas_and_stats() -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[2:12, 3:23] = 1  # 10 x 20 px = 20 000 m²
    mask[30:50, 30:50] = 1  # 20 x 20 px with a 4 x 4 hole = 40 000 - 1 600 m²
    mask[38:42, 38:42] = 0
    mask[60:62, 0:2] = 1  # 4 px = 400 m², below the minimum
    prob = np.where(mask > 0, 0.8, 0.1).astype(np.float32)
    prob[5, 5] = 0.95
    polys, labels = mask_to_polygons(mask, GRID, patch_id="p7", prob=prob, min_area_m2=1000)
    assert list(polys["id"]) == ["p7_001", "p7_002"]
    np.testing.assert_allclose(polys["area_m2"], [20_000.0, 38_400.0])
    np.testing.assert_allclose(polys["max_prob"], [0.95, 0.8], atol=1e-6)
    np.testing.assert_allclose(polys["mean_prob"][1], 0.8, atol=1e-6)
    assert polys.crs == GRID.crs and len(polys.geometry[1].interiors) == 1
    assert polys.geometry[0].bounds == (440_030.0, 4_169_880.0, 440_230.0, 4_169_980.0)
    assert labels.max() == 2 and (labels[60:62, 0:2] == 0).all()
    assert polys.to_crs(4326).crs.to_epsg() == 4326


def test_pixel_and_object_metrics_on_a_known_pair() -> None:
    truth = np.zeros((40, 40), bool)
    truth[0:10, 0:10] = True  # found (IoU 0.8)
    truth[20:30, 20:30] = True  # missed (IoU 0.25 < 0.5)
    pred = np.zeros((40, 40), bool)
    pred[0:10, 0:8] = True
    pred[20:25, 20:25] = True
    pred[35:40, 35:40] = True  # false positive
    counts = pixel_counts(pred, truth)
    assert (counts.tp, counts.fp, counts.fn) == (80 + 25, 25, 20 + 75)
    assert counts.iou == pytest.approx(105 / 225) and counts.f1 == pytest.approx(210 / 330)
    match = match_objects(components(pred)[0], components(truth)[0], 0.5)
    assert [(p, t) for p, t, _ in match.pairs] == [(1, 1)]
    assert match.pairs[0][2] == pytest.approx(0.8)
    assert match.unmatched_pred == (2, 3) and match.unmatched_truth == (2,)
    total = ObjectCounts()
    total.add(match)
    assert total.as_dict()["precision"] == pytest.approx(1 / 3)
    assert total.as_dict()["recall"] == pytest.approx(1 / 2)


def test_threshold_sweep_finds_the_separating_threshold() -> None:
    truth = np.array([0, 0, 0, 1, 1, 1], bool)
    prob = np.array([0.1, 0.2, 0.28, 0.31, 0.6, 0.9])
    sweep = ThresholdSweep()
    sweep.update(prob, truth)
    threshold, iou = sweep.best("iou")
    assert iou == 1.0 and 0.28 < threshold <= 0.31
    assert ThresholdSweep().best() == (0.5, 0.0)


def test_dihedral_gives_eight_distinct_symmetries() -> None:
    x = torch.arange(12.0).view(1, 3, 4)[:, :, :3]
    outs = {(*dihedral(x, k).flatten().tolist(), dihedral(x, k).shape) for k in range(8)}
    assert len(outs) == 8
    sq = torch.arange(9.0).view(3, 3)
    assert torch.equal(dihedral(dihedral(sq, 1), 3), sq)


def test_config_validators_name_key_and_fix() -> None:
    with pytest.raises(ConfigError, match="decoder_channels has 3 entries"):
        load_config("configs/demo.yaml", ["train.decoder_channels=[8,8,8]"])
    with pytest.raises(ConfigError, match="not a multiple of 2\\*\\*encoder_depth"):
        load_config("configs/demo.yaml", ["train.crop_size=100"])
    with pytest.raises(ConfigError, match=r"predict\.overlap 256 must be smaller"):
        load_config("configs/demo.yaml", ["predict.overlap=256"])
    assert load_config("configs/demo.yaml", ["predict.threshold=0.4"]).predict.threshold == 0.4


def test_band_stats_for_other_bands_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    path.write_text(
        json.dumps({"bands": ["B04", "B03", "B02"], "mean": [1, 2, 3], "std": [1, 1, 1]})
    )
    with pytest.raises(ModelError, match="describe bands"):
        read_band_stats(path)
    path.write_text(json.dumps({"bands": list(BANDS), "mean": [1.0] * 10, "std": [0.0] * 10}))
    with pytest.raises(ModelError, match="non-positive stds"):
        read_band_stats(path)


def test_local_rgb_encoder_weights_are_mapped_band_by_band(tmp_path: Path) -> None:
    rgb = build_unet(Arch("resnet18", 3, (32, 16, 8), in_channels=3))
    path = tmp_path / "rgb.pt"
    torch.save(rgb.encoder.state_dict(), path)
    net = build_unet(Arch("resnet18", 3, (32, 16, 8)))
    info = load_encoder_weights(net, path, ("B04", "B03", "B02"), BANDS)
    assert info == {"loaded": len(rgb.encoder.state_dict()), "remapped": 1, "missing_bands": 7}
    src, dst = rgb.encoder.conv1.weight, net.encoder.conv1.weight
    assert torch.equal(dst[:, BANDS.index("B04")], src[:, 0])
    assert torch.equal(dst[:, BANDS.index("B02")], src[:, 2])
    assert torch.allclose(dst[:, BANDS.index("B11")], src.mean(1))
