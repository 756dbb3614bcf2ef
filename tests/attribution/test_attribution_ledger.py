"""The attribute stage's rows, tables, quotas, seeds and mosaic groups, without a model."""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import pytest
import torch
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import Point

from pipeline.attribution.layers import read_layer
from pipeline.attribution.ledger import (
    FARM_COLUMNS,
    INDEX_COLUMNS,
    PatchRecords,
    Skip,
    combine,
    farm_row,
    farms_frame,
    index_frame,
    mean_agreement,
    result_row,
    skip_records,
    tally,
)
from pipeline.attribution.methods import AttributionResult
from pipeline.attribution.objects import RegionMass
from pipeline.attribution.patches import (
    Allowance,
    Quota,
    Quotas,
    allot,
    derive_seed,
    object_layer_paths,
)
from pipeline.attribution.stitch import scene_groups
from pipeline.attribution.targets import Target
from pipeline.config.attribute import AttributeConfig
from pipeline.geo.raster import Grid
from pipeline.paths import RunPaths


def result(gap: float | None = 0.5, all_zero: bool = False) -> AttributionResult:
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1:3, 1:3] = True
    return AttributionResult(
        values=torch.zeros(10, 4, 4),
        aggregate=torch.zeros(4, 4),
        method="integrated_gradients",
        target=Target("label_farms", "w7", mask),
        score=2.0,
        baseline_score=1.0,
        completeness_gap=gap,
        params={"all_zero": all_zero},
    )


def test_result_row_has_the_index_columns_and_values() -> None:
    row = result_row(result(), patch_id="p1", path="attribute/x.tif", seconds=0.123456, flag=True)
    assert tuple(row) == INDEX_COLUMNS
    assert row["target_pixels"] == 4 and row["seconds"] == 0.1235 and row["status"] == "ok"
    assert row["reason"] == "" and row["target_id"] == "w7" and row["gap_flag"] is True
    zero = result_row(result(all_zero=True), patch_id="p1", path="x", seconds=0, flag=None)
    assert zero["reason"] == "all-zero attribution"


def test_skip_rows_log_and_fill_only_their_columns(caplog) -> None:
    with caplog.at_level(logging.DEBUG, logger="pipeline.attribution.ledger"):
        records = skip_records(
            [
                Skip("p1", "saliency", "patch", "", "budget: attribute.max_targets.saliency=1"),
                Skip("p2", "*", "*", "*", "patch unreadable: gone", "failed"),
            ]
        )
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.DEBUG, logging.WARNING]
    frame = index_frame(records.rows)
    assert tuple(frame.columns) == INDEX_COLUMNS
    assert list(frame["status"]) == ["skipped", "failed"] and frame["score"].isna().all()


def test_tally_counts_statuses_reasons_and_flags() -> None:
    ok = result_row(result(), patch_id="p1", path="a", seconds=1, flag=True)
    fine = result_row(result(), patch_id="p1", path="b", seconds=1, flag=False)
    skips = skip_records(
        [
            Skip("p1", "m", "t", "", "max_objects_per_patch: 30 objects, first 20 explained"),
            Skip("p2", "*", "*", "*", "patch unreadable: x", "failed"),
            Skip("p3", "*", "*", "*", "patch unreadable: y", "failed"),
        ]
    )
    records = combine(
        [PatchRecords([ok, fine], agreement=[0.5]), skips, PatchRecords(agreement=[1])]
    )
    counts = tally(records)
    assert counts == {
        "attributions": 2,
        "skipped": 1,
        "failed": 2,
        "skip_reasons": {"max_objects_per_patch": 1, "patch unreadable": 2},
        "gap_flags": 1,
        "farm_rows": 0,
    }
    assert mean_agreement(records) == 0.75 and mean_agreement(PatchRecords()) is None


def test_farms_frame_writes_gap_flags_as_text() -> None:
    mass = RegionMass(1.0, 0.5, 0.25, 0.5, 0.3, 0.2, ("B04", "B08", "B11"))
    rows = [
        farm_row(result(), patch_id="p1", mass=mass, flag=flag, geometry_4326=Point(1, 2))
        for flag in (True, False, None)
    ]
    frame = farms_frame(rows)
    assert tuple(frame.columns) == FARM_COLUMNS and frame.crs.to_epsg() == 4326
    assert list(frame["gap_flag"]) == ["true", "false", ""]
    assert frame["top_bands"].iloc[0] == '["B04", "B08", "B11"]'


def test_quota_counts_per_key_and_stops_at_the_limit() -> None:
    quota = Quota({"a": 2, "b": None}.get)
    assert [quota.take("a") for _ in range(3)] == [True, True, False]
    assert all(quota.take("b") for _ in range(5)) and quota.take("unlisted")
    assert quota.used["a"] == 2
    off = Quotas.of(AttributeConfig(quicklooks=False, max_quicklooks=5))
    assert not off.quicklooks.take(("saliency", "patch"))
    on = Quotas.of(AttributeConfig(max_quicklooks=1, max_targets={"saliency": 0}))
    assert on.quicklooks.take(("saliency", "patch")) and not on.quicklooks.take(
        ("saliency", "patch")
    )
    assert not on.targets.take("saliency") and on.targets.take("integrated_gradients")


def test_derive_seed_is_stable_and_31_bit() -> None:
    seed = derive_seed(42, "p00001", "kernel_shap", "predicted_mask", "")
    assert seed == derive_seed(42, "p00001", "kernel_shap", "predicted_mask", "")
    assert seed != derive_seed(43, "p00001", "kernel_shap", "predicted_mask", "")
    assert 0 <= seed < 2**31
    assert derive_seed(0, "a") == 1771091398  # fixed: seeds must not change between releases


def test_object_paths_and_layers_come_from_run_paths(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path, "r")
    cfg = AttributeConfig(
        targets=("patch", "false_positives", "missed_farms"), analyst_polygons=tmp_path / "a.gpkg"
    )
    assert object_layer_paths(cfg, paths) == {
        "false_positives": paths.false_positives,
        "missed_farms": paths.missed_farms,
        "polygon": tmp_path / "a.gpkg",
    }
    cog = paths.attribution("p1", "saliency", "label_farms", "way/12 a")
    assert cog == paths.stage_dir("attribute") / "saliency" / "label_farms" / "p1__way_12_a.tif"


def test_scene_groups_take_explained_patch_level_rows() -> None:
    rows = [
        {"status": "ok", "target_id": "", "method": "s", "target": "patch", "path": "a.tif"},
        {"status": "ok", "target_id": "w1", "method": "s", "target": "label_farms", "path": "b"},
        {"status": "skipped", "target_id": "", "method": "s", "target": "patch", "path": ""},
        {"status": "ok", "target_id": "", "method": "a", "target": "patch", "path": "c.tif"},
        {"status": "ok", "target_id": "", "method": "s", "target": "patch", "path": "d.tif"},
    ]
    groups = scene_groups(rows)
    assert list(groups) == [("a", "patch"), ("s", "patch")]
    assert groups[("s", "patch")] == ["a.tif", "d.tif"]


@pytest.mark.parametrize("text", ["", "EPSG:32633", "a/b c"])
def test_safe_names_are_file_names(text: str) -> None:
    from pipeline.paths import safe_name

    name = safe_name(text)
    assert name and "/" not in name and ":" not in name and " " not in name


def test_allot_takes_the_caps_patch_by_patch_in_order() -> None:
    cfg = AttributeConfig(
        methods=("saliency", "kernel_shap"), max_targets={"kernel_shap": 3}, max_quicklooks=2
    )
    keys = [
        [("predicted_mask", ""), ("label_farms", "w1")],
        [],
        [("predicted_mask", ""), ("label_farms", "w2"), ("label_farms", "w3")],
    ]
    first, empty, last = allot(keys, cfg)
    assert first.explain == {
        ("saliency", "predicted_mask", ""),
        ("kernel_shap", "predicted_mask", ""),
        ("saliency", "label_farms", "w1"),
        ("kernel_shap", "label_farms", "w1"),
    }
    assert empty.explain == frozenset()
    # kernel_shap has one target left for the last patch: its first; saliency is uncapped
    assert {k for k in last.explain if k[0] == "kernel_shap"} == {
        ("kernel_shap", "predicted_mask", "")
    }
    assert {k for k in last.explain if k[0] == "saliency"} == {
        ("saliency", n, t) for n, t in keys[2]
    }
    # quicklooks: two per (method, target kind) over the run, in the same order
    assert ("saliency", "label_farms", "w2") in last.quicklooks
    assert ("saliency", "label_farms", "w3") not in last.quicklooks
    assert ("saliency", "predicted_mask", "") in last.quicklooks
    assert Allowance().explains(("any", "thing", "")) and Allowance().looks(("a", "b", ""))


def test_mapped_farms_are_targets_on_their_own_patch_only(tmp_path) -> None:
    from shapely.geometry import box

    frame = gpd.GeoDataFrame(
        {"farm_id": ["m0001", "m0002"], "in_osm": [True, False]},
        geometry=[box(0, 0, 1, 1), box(0.5, 0.5, 2, 2)],
        crs=4326,
    )
    path = tmp_path / "farms.gpkg"
    frame.to_file(path, layer="farms", driver="GPKG")
    layer, reason = read_layer("mapped_farms", path)
    assert reason == "" and layer is not None
    assert list(layer.frame["patch_id"]) == ["m0001", "m0002"]
    grid = Grid(CRS.from_epsg(4326), Affine(0.1, 0, 0, 0, -0.1, 2), 20, 20)  # both farms
    assert list(layer.for_patch("m0002", grid)["target_id"]) == ["m0002"]
    assert layer.for_patch("p00001", grid).empty
    cfg = AttributeConfig(targets=("mapped_farms",))
    paths = RunPaths(tmp_path, "r")
    assert object_layer_paths(cfg, paths) == {"mapped_farms": paths.map_farms}
    # a mapped farm without a patch (map.farm_patches off) is a recorded skip, not a gap
    from pipeline.attribution.tasks import PatchTask, missing_patches

    tasks = [PatchTask("m0001", paths.map_patch("m0001"), True)]
    rows = missing_patches({"mapped_farms": layer}, tasks, paths).rows
    assert [(r["patch_id"], r["target_id"], r["status"]) for r in rows] == [
        ("m0002", "m0002", "skipped")
    ]
    assert "map.farm_patches" in rows[0]["reason"]
