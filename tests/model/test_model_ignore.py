"""Ignore masks (``train.ignore_labels``): no gradient from ignored pixels, a real review file
read onto real tile grids, and a train stage that leaves the outlines out."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from shapely.geometry import box
from support.model import make_run, patch_grid

from pipeline.bands import BANDS
from pipeline.config import load_config
from pipeline.config.feedback import IgnoreLabelsConfig
from pipeline.errors import LabelsError, MissingArtifactError
from pipeline.geo.masks import rasterize_mask
from pipeline.model.data import TileDataset, read_band_stats, read_tiles_index
from pipeline.model.ignore import IGNORE_VALUE, ignore_masks
from pipeline.model.io import Arch, build_unet
from pipeline.model.module import SegLoss, dice_loss, split_metrics
from pipeline.stages import run_stage
from pipeline.triage.feedback import ignore_regions, read_review
from pipeline.triage.review import CANDIDATE_COLUMNS, SUSPECT_COLUMNS, layer

TINY = Arch(encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8))


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, 0/1 targets and an ignore mask: a block and a few scattered pixels."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, len(BANDS), 32, 32, generator=gen)
    target = (torch.rand(2, 1, 32, 32, generator=gen) > 0.6).float()
    ignore = torch.zeros_like(target, dtype=torch.bool)
    ignore[0, :, 4:14, 6:20] = True
    ignore[1, :, 20:, :5] = True
    return x, target, ignore


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_unet(TINY).train()


def test_ignored_pixels_contribute_no_gradient() -> None:
    x, target, ignore = _batch()
    net = _net()
    labelled = target.masked_fill(ignore, IGNORE_VALUE)
    logits = net(x)
    logits.retain_grad()
    loss = SegLoss("bce+dice")(logits, labelled)
    loss.backward()
    assert logits.grad is not None
    assert torch.count_nonzero(logits.grad[ignore]) == 0
    assert torch.count_nonzero(logits.grad[~ignore]) == int((~ignore).sum())
    # the same loss written over the labelled pixels alone: same value, same weight gradients
    kept, truth = logits.detach()[~ignore].requires_grad_(), target[~ignore]
    prob = torch.sigmoid(kept)
    direct = F.binary_cross_entropy_with_logits(kept, truth) + (
        1 - 2 * (prob * truth).sum() / (prob.sum() + truth.sum())
    )
    assert loss.item() == pytest.approx(direct.item(), rel=1e-6)
    (grad_kept,) = torch.autograd.grad(direct, kept)
    assert torch.allclose(logits.grad[~ignore], grad_kept, atol=1e-9)


def test_weight_gradients_do_not_depend_on_the_labels_under_the_mask() -> None:
    x, target, ignore = _batch(1)
    flipped = torch.where(ignore, 1 - target, target)  # other labels where ignored
    grads = []
    for labels in (target, flipped):
        net = _net(3)
        SegLoss("bce+dice")(net(x), labels.masked_fill(ignore, IGNORE_VALUE)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    assert torch.equal(grads[0], grads[1])
    # without the mask the flipped labels do change them
    net = _net(3)
    SegLoss("bce+dice")(net(x), flipped).backward()
    plain = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    assert not torch.allclose(plain, grads[0])


def test_without_ignored_pixels_the_loss_is_the_plain_one() -> None:
    x, target, _ = _batch(2)
    logits = _net()(x).detach()
    expected = F.binary_cross_entropy_with_logits(logits, target) + dice_loss(
        logits, target, global_batch=False
    )
    assert SegLoss("bce+dice")(logits, target).item() == expected.item()


def test_split_metrics_leave_ignored_pixels_out_of_the_denominators() -> None:
    _, target, ignore = _batch(4)
    prob = torch.rand(target.shape, generator=torch.Generator().manual_seed(5))
    metrics = split_metrics("val/")
    metrics.update(prob, target.masked_fill(ignore, IGNORE_VALUE).int())
    pred, truth = prob[~ignore] >= 0.5, target[~ignore] > 0
    iou = (pred & truth).sum() / (pred | truth).sum()
    assert metrics.compute()["val/iou"].item() == pytest.approx(iou.item(), rel=1e-6)


def write_review(path: Path, suspects: list[tuple], candidates: list[tuple]) -> Path:
    """A review file in the triage stage's schema: ``(farm_id, reason, polygon)`` suspects and
    ``(object_id, score, polygon)`` candidates, polygons in EPSG:32618."""
    sus = gpd.GeoDataFrame(
        pd.DataFrame({"farm_id": [s[0] for s in suspects], "reason": [s[1] for s in suspects]}),
        geometry=[s[2] for s in suspects],
        crs=32618,
    ).to_crs(4326)
    cands = gpd.GeoDataFrame(
        pd.DataFrame(
            {
                "object_id": [c[0] for c in candidates],
                "score": [c[1] for c in candidates],
                "focus": [np.nan] * len(candidates),
                "cue": [""] * len(candidates),
            }
        ),
        geometry=[c[2] for c in candidates],
        crs=32618,
    ).to_crs(4326)
    cands, sus = layer(cands, CANDIDATE_COLUMNS), layer(sus, SUSPECT_COLUMNS)
    cands.to_file(path, layer="candidates", driver="GPKG")
    sus.to_file(path, layer="suspects", driver="GPKG", mode="a")
    return path


def _inside(k: int, r0: int, c0: int, r1: int, c1: int) -> box:
    """Rows ``r0:r1``, columns ``c0:c1`` of patch ``k`` (see ``support.model.patch_grid``)."""
    left, _, _, top = patch_grid(k).bounds
    return box(left + 10 * c0, top - 10 * r1, left + 10 * c1, top - 10 * r0)


def test_a_review_file_becomes_ignore_masks_on_each_tile(tmp_path: Path) -> None:
    _, paths = make_run(tmp_path, n_per_split={"train": 4, "val": 2})
    review = write_review(
        tmp_path / "review.gpkg",
        [("w1", "not_found", _inside(0, 10, 10, 20, 30)), ("w2", "found", _inside(1, 0, 0, 9, 9))],
        [("m1", 0.4, _inside(4, 30, 30, 40, 44)), ("m2", 0.02, _inside(2, 5, 5, 30, 30))],
    )
    ic = IgnoreLabelsConfig(review=review, buffer_m=0)
    regions = ignore_regions(read_review(review, "train.ignore_labels.review"), ic)
    # "found" is no suspect reason; m2 scores below min_candidate_score
    assert sorted(regions["farm_id"]) == ["candidate:m1", "w1"]
    records = read_tiles_index(paths.tiles_index, paths.root)
    masks = ignore_masks(records, regions)
    assert sorted(masks) == ["p00000", "p00004"]
    expected = rasterize_mask([_inside(0, 10, 10, 20, 30)], patch_grid(0), all_touched=True)
    assert np.array_equal(masks["p00000"], expected > 0)
    assert masks["p00000"][10:20, 10:30].all() and masks["p00000"].sum() <= 12 * 22
    data = TileDataset(records, read_band_stats(paths.band_stats), ignore=masks)
    y = data[0][1][0]
    assert torch.equal(y == IGNORE_VALUE, torch.from_numpy(masks["p00000"]))
    assert set(torch.unique(data[1][1]).tolist()) <= {0.0, 1.0}


def test_train_stage_leaves_the_review_outlines_out(tmp_path: Path) -> None:
    review = write_review(
        tmp_path / "review.gpkg",
        [("w1", "surroundings", _inside(1, 8, 8, 24, 24))],
        [("m1", 0.5, _inside(4, 0, 0, 16, 16))],
    )
    cfg, _ = make_run(
        tmp_path,
        n_per_split={"train": 4, "val": 2},
        overrides=[f"train.ignore_labels.review={review}", "train.ignore_labels.buffer_m=0"],
    )
    assert cfg.train.ignore_labels == IgnoreLabelsConfig(review=review, buffer_m=0)
    summary = run_stage("train", cfg).summary
    info = summary["ignore_labels"]
    assert info["regions"] == {"suspect": 1, "candidate": 1}
    box_pixels = int(
        rasterize_mask([_inside(0, 8, 8, 24, 24)], patch_grid(0), all_touched=True).sum()
    )
    assert 16 * 16 <= box_pixels <= 18 * 18
    assert info["per_split"]["train"] == {"tiles": 1, "pixels": box_pixels}
    assert info["per_split"]["val"] == {"tiles": 1, "pixels": box_pixels}
    assert len(info["review_sha256"]) == 64
    # the reported metrics count every pixel: the same tiles without the option agree in count
    metrics = summary["metrics"]["val"]
    assert metrics["tp"] + metrics["fp"] + metrics["fn"] + metrics["tn"] == 2 * 64 * 64


def test_a_missing_or_foreign_review_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MissingArtifactError, match=r"triage RUN=old"):
        read_review(tmp_path / "runs" / "old" / "triage" / "review.gpkg", "train.ignore_labels")
    other = tmp_path / "farms.gpkg"
    gpd.GeoDataFrame({"farm_id": ["a"]}, geometry=[box(0, 0, 1, 1)], crs=4326).to_file(
        other, layer="farms"
    )
    with pytest.raises(LabelsError, match=r"no layer 'candidates'.*make triage"):
        read_review(other, "train.ignore_labels.review")


def test_the_option_is_outside_the_digest_until_set(tmp_path: Path) -> None:
    import hashlib
    import json

    from pipeline.config import config_digest

    cfg = load_config("configs/demo.yaml")
    for section, key in (("train", "ignore_labels"), ("labels", "hard_negatives")):
        dump = cfg.model_dump(mode="json")[section]
        assert dump.pop(key) is None
        blob = json.dumps(
            {section: dump, "seed": cfg.run.seed}, sort_keys=True, separators=(",", ":")
        )
        assert config_digest(cfg, [section]) == hashlib.sha256(blob.encode()).hexdigest()
    review = tmp_path / "r.gpkg"
    on = load_config("configs/demo.yaml", [f"train.ignore_labels={review}"])
    assert config_digest(on, ["train"]) != config_digest(cfg, ["train"])
    assert config_digest(on, ["labels"]) == config_digest(cfg, ["labels"])
