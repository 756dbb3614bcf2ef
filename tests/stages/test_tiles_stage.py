"""The tiles stage on real patch COGs: masks on the patch grid, areas, splits, band stats."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import box

from pipeline.bands import BANDS
from pipeline.config import RunConfig
from pipeline.errors import MissingArtifactError, RasterError
from pipeline.geo.crs import to_epsg
from pipeline.geo.raster import read_grid
from pipeline.geo.splits import group_patches
from pipeline.stages import run_stage
from pipeline.stages import tiles as tiles_stage


def _with_tiles(cfg: RunConfig, **tiles: object) -> RunConfig:
    return cfg.model_copy(update={"tiles": cfg.tiles.model_copy(update=tiles)})


def test_labels_fetch_tiles_through_the_runner(labelled_run) -> None:
    run = labelled_run
    paths = run.paths
    manifest = run_stage("tiles", run.cfg)
    index = gpd.read_file(paths.tiles_index, layer="tiles")
    plan = gpd.read_file(paths.plan, layer="plan")
    farms = gpd.read_file(paths.farms, layer="farms")
    assert index.crs.to_epsg() == 4326
    assert set(index["patch_id"]) == set(plan["patch_id"]) - {run.skipped}
    assert not paths.mask(run.skipped).exists()
    assert {
        "patch_id",
        "split",
        "block",
        "image",
        "scl",
        "mask",
        "coverage",
        "farm_pixels",
        "farm_ids",
    } <= set(index.columns)
    assert manifest.summary["skipped"] == 1
    assert manifest.summary["skipped_by_reason"] == {"skipped: clear fraction 0.10 < 0.5": 1}
    assert sum(v["patches"] for v in manifest.summary["per_split"].values()) == len(index)
    assert manifest.summary["farms_in_several_splits"] == 0
    assert set(manifest.inputs) == {"labels", "fetch"}
    assert manifest.summary["plan_block_m"] == manifest.summary["block_size_m"] == 2560
    assert manifest.summary["largest_group"] < len(index)  # block-aligned plan: small groups

    for row in index.itertuples():
        mask_path = paths.root / row.mask
        assert read_grid(mask_path) == read_grid(paths.root / row.image)  # exactly the grid
        with rasterio.open(mask_path) as src:
            mask = src.read(1)
            assert src.descriptions == ("farm",) and src.dtypes == ("uint8",)
        assert set(np.unique(mask)) <= {0, 1} and mask.sum() == row.farm_pixels
        assert row.coverage == pytest.approx(row.farm_pixels / mask.size)
        # pixel count x 100 m² matches the farm area inside the patch (pixel-centre rule)
        grid = read_grid(mask_path)
        frame = box(*grid.bounds)
        inside = [to_epsg(g, grid.crs.to_epsg()).intersection(frame) for g in farms.geometry]
        area = sum(g.area for g in inside)
        perimeter = sum(g.length for g in inside)
        assert abs(row.farm_pixels * 100 - area) <= perimeter * 10 / 2 + 1
        if area > 50_000:
            assert row.farm_pixels * 100 == pytest.approx(area, rel=0.05)
        shown = {str(f) for f, g in zip(farms["farm_id"], inside, strict=True) if g.area > 0}
        assert shown <= set(json.loads(row.farm_ids))

    # no farm in two splits; patches that overlap share a split
    split_of: dict[str, set[str]] = {}
    for ids, split in zip(index["farm_ids"], index["split"], strict=True):
        for f in json.loads(ids):
            split_of.setdefault(f, set()).add(split)
    assert all(len(s) == 1 for s in split_of.values())
    for i, a in index.iterrows():
        for j, b in index.iterrows():
            if i < j and a.geometry.intersection(b.geometry).area > 1e-9:
                assert a["split"] == b["split"]

    # band statistics = a direct float64 computation over the train patches
    stats = json.loads(paths.band_stats.read_text())
    train = index[index["split"] == "train"]
    assert stats["bands"] == list(BANDS) and stats["n_patches"] == len(train) > 0
    stacks = []
    for image in train["image"]:
        with rasterio.open(paths.root / image) as src:
            stacks.append(src.read().reshape(len(BANDS), -1).astype(np.float64))
    pixels = np.concatenate(stacks, axis=1)
    for b in range(len(BANDS)):
        valid = pixels[b][pixels[b] != 0]
        assert stats["mean"][b] == pytest.approx(valid.mean(), rel=1e-10)
        assert stats["std"][b] == pytest.approx(valid.std(), rel=1e-10)
    assert stats["n_valid_per_band"][0] == stats["n_pixels"] < stats["n_valid_per_band"][1]


def test_splits_are_deterministic_and_keep_groups_whole(labelled_run) -> None:
    run = labelled_run
    fine = _with_tiles(run.cfg, block_size_m=300.0, split_fractions=(0.34, 0.33, 0.33))
    tiles_stage.run(fine, run.paths)
    first = gpd.read_file(run.paths.tiles_index, layer="tiles")
    tiles_stage.run(fine, run.paths)
    second = gpd.read_file(run.paths.tiles_index, layer="tiles")
    assert list(first["split"]) == list(second["split"])
    assert len(set(first["block"])) > 3  # many blocks ...
    for _, members in first.groupby("group"):
        assert members["split"].nunique() == 1  # ... but each group in one split
    farm_splits: dict[str, set[str]] = {}
    for ids, split in zip(first["farm_ids"], first["split"], strict=True):
        for f in json.loads(ids):
            farm_splits.setdefault(f, set()).add(split)
    assert all(len(s) == 1 for s in farm_splits.values())
    other_seed = fine.model_copy(update={"run": fine.run.model_copy(update={"seed": 7})})
    tiles_stage.run(other_seed, run.paths)
    third = gpd.read_file(run.paths.tiles_index, layer="tiles")
    assert list(third["split"]) != list(first["split"])


def test_all_touched_labels_at_least_the_centre_rule(labelled_run) -> None:
    run = labelled_run
    tiles_stage.run(run.cfg, run.paths)
    centre = gpd.read_file(run.paths.tiles_index, layer="tiles").set_index("patch_id")
    out = tiles_stage.run(_with_tiles(run.cfg, all_touched=True), run.paths)
    touched = gpd.read_file(run.paths.tiles_index, layer="tiles").set_index("patch_id")
    assert out.summary["all_touched"] is True
    assert (touched["farm_pixels"] >= centre["farm_pixels"]).all()
    assert touched["farm_pixels"].sum() > centre["farm_pixels"].sum()


def test_group_patches_joins_overlap_and_shared_farms() -> None:
    a, b = box(0, 0, 2, 2), box(1, 1, 3, 3)  # overlap
    c = box(10, 10, 11, 11)  # apart, but shows the same farm as a
    d = box(2, 0, 3, 1)  # only touches a's edge
    e = box(20, 20, 21, 21)
    groups = group_patches([a, b, c, d, e], [["w1"], [], ["w1"], [], ["w2"]])
    assert groups == [0, 0, 0, 3, 4]


def test_bad_inputs(labelled_run) -> None:
    run = labelled_run
    paths = run.paths
    tiles_stage.run(run.cfg, paths)
    masks_before = sorted(p.name for p in paths.mask("x").parent.iterdir())
    index = gpd.read_file(paths.fetch_index, layer="patches")
    victim = paths.root / index["image"].iloc[0]
    victim.write_bytes(b"not a tiff")
    with pytest.raises(RasterError, match="cannot read raster"):
        tiles_stage.run(run.cfg, paths)
    assert sorted(p.name for p in paths.mask("x").parent.iterdir()) == masks_before
    assert not list(paths.stage_dir("tiles").glob(".masks*"))  # no temporary left behind
    paths.fetch_index.unlink()
    with pytest.raises(MissingArtifactError, match="make fetch"):
        tiles_stage.run(run.cfg, paths)
