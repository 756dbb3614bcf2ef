"""The attribute stage end to end on a tiny fake run, through the stage runner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import box

from pipeline.attribution.ledger import INDEX_COLUMNS
from pipeline.bands import BANDS
from pipeline.config import load_config
from pipeline.geo.raster import Grid, read_raster, write_cog
from pipeline.manifest import Manifest
from pipeline.model.io import Arch, ModelMeta, build_unet, normalize, save_model
from pipeline.paths import RunPaths
from pipeline.stages import run_stage

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
UTM = CRS.from_epsg(32618)


def patch_grid(k: int) -> Grid:
    return Grid(UTM, Affine(10.0, 0.0, 440_000.0 + k * 2000, 0.0, -10.0, 4_170_000.0), 64, 64)


def utm_box(grid: Grid, c0: int, r0: int, c1: int, r1: int):
    x0, y0 = grid.transform.c, grid.transform.f
    return box(x0 + 10 * c0, y0 - 10 * r1, x0 + 10 * c1, y0 - 10 * r0)


def to_4326(geoms, **cols) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(cols, geometry=list(geoms), crs=UTM).to_crs(4326)


def build_run(root: Path) -> RunPaths:
    paths = RunPaths(root, "demo")
    rng = np.random.default_rng(0)
    meta = ModelMeta(
        bands=BANDS,
        mean=tuple([1000.0] * 10),
        std=tuple([500.0] * 10),
        arch=Arch(encoder="resnet18", encoder_depth=3, decoder_channels=(16, 8, 4)),
    )
    rows = []
    for k, split in enumerate(("train", "test", "val")):
        pid, grid = f"p{k:05d}", patch_grid(k)
        if k < 2:  # p00002 is in the index but its image is missing
            yy, xx = np.mgrid[0:64, 0:64]
            base = 800 + 600 * np.sin(xx / 9.0)[None] + 400 * np.cos(yy / 7.0)[None]
            array = (base + rng.integers(0, 300, (10, 64, 64))).astype(np.uint16)
            array[:, 0, 0] = 0  # one nodata pixel
            write_cog(
                paths.image(pid),
                array,
                grid,
                band_names=BANDS,
                nodata=0,
                tags={"stac_item_ids": json.dumps([f"S2A_item_{k}"])},
            )
        rows.append(
            {
                "patch_id": pid,
                "split": split,
                "image": f"fetch/patches/{pid}.tif",
                "geometry": box(*grid.bounds),
            }
        )
    frame = gpd.GeoDataFrame(rows, crs=UTM).to_crs(4326)
    paths.tiles_index.parent.mkdir(parents=True, exist_ok=True)
    frame.to_file(paths.tiles_index, layer="tiles", driver="GPKG")
    torch.manual_seed(0)
    model = build_unet(meta.arch).eval()
    x = normalize(read_raster(paths.image("p00000"))[0], meta)[None]
    with torch.no_grad():
        logits = model(x)
    threshold = float(torch.sigmoid(logits.flatten().quantile(0.8)))
    meta = ModelMeta(**{**meta.__dict__, "threshold": threshold})
    paths.model.parent.mkdir(parents=True, exist_ok=True)
    save_model(paths.model, model, meta)
    mask = (torch.sigmoid(logits)[0, 0] >= threshold).numpy().astype(np.uint8)[None]
    write_cog(paths.predicted_mask("p00000"), mask, patch_grid(0), band_names=("mask",))
    g0, g1 = patch_grid(0), patch_grid(1)
    to_4326(
        [utm_box(g0, 10, 10, 30, 25), utm_box(g0, 300, 300, 310, 310)],
        pred_id=["p00000_001", "p00000_002"],
        patch_id=["p00000", "p00000"],
    ).to_file(paths.predicted_farms, driver="GPKG")
    paths.farms.parent.mkdir(parents=True, exist_ok=True)
    to_4326([utm_box(g1, 20, 20, 40, 44)], farm_id=["w42"]).to_file(
        paths.farms, layer="farms", driver="GPKG"
    )
    for stage in ("tiles", "train", "predict"):
        Manifest(stage, "x", {}, [], {}, 0.0).write(paths.manifest(stage))
    return paths


def test_attribute_stage_on_a_tiny_run(tmp_path: Path) -> None:
    paths = build_run(tmp_path)
    analyst = tmp_path / "analyst.gpkg"
    to_4326([utm_box(patch_grid(1), 2, 2, 12, 12)], id=["mine"]).to_file(analyst, driver="GPKG")
    overrides = [
        f"run.data_root={tmp_path}",
        f"attribute.analyst_polygons={analyst}",
        "attribute.methods=[saliency, integrated_gradients, kernel_shap]",
        "attribute.targets=[predicted_mask, patch, predicted_farms, label_farms, false_positives]",
        "attribute.ig_steps=8",
        "attribute.n_superpixels=8",
        "attribute.shap_samples=24",
        "attribute.max_quicklooks=1",
        "attribute.stitch=true",
        "attribute.device=cpu",
    ]
    cfg = load_config(CONFIG, overrides)
    manifest = run_stage("attribute", cfg)
    s = manifest.summary
    assert (
        s["patches"] == 2
        and s["failed"] == 1
        and s["object_layers"] == ["label_farms", "polygon", "predicted_farms"]
    )
    assert any("false_positives" in r or "object layer unavailable" in r for r in s["skip_reasons"])
    assert s["predicted_mask_iou_with_predict"] == 1.0

    index = pd.read_csv(paths.attribution_index, keep_default_na=False)
    assert tuple(index.columns) == INDEX_COLUMNS
    ok = index[index.status == "ok"]
    # p00000: predicted_mask, patch, 1 predicted farm; p00001: predicted_mask, patch, w42, mine
    assert len(ok) == 3 * 7, ok[["patch_id", "target", "target_id", "method"]]
    assert set(index[index.status == "failed"].patch_id) == {"p00002"}
    outside = index[(index.target_id == "p00000_002")]
    assert (outside.status == "skipped").all() and outside.reason.str.contains("outside").all()
    ig = ok[ok.method == "integrated_gradients"]
    assert (ig.completeness_gap.astype(float) >= 0).all() and set(ig.gap_flag) <= {"True", "False"}

    obj = paths.stage_dir("attribute") / "saliency" / "label_farms" / "p00001__w42.tif"
    assert "attribute/saliency/label_farms/p00001__w42.tif" in set(ok.path)
    with rasterio.open(obj) as src:
        assert src.crs == UTM and src.transform == patch_grid(1).transform
        assert src.descriptions == (*BANDS, "aggregate")
        tags = src.tags()
    assert tags["target_id"] == "w42" and json.loads(tags["stac_item_ids"]) == ["S2A_item_1"]
    from pipeline.io import sha256_file

    assert tags["model_sha256"] == sha256_file(paths.model)

    farms = gpd.read_file(paths.stage_dir("attribute") / "farms.gpkg")
    assert farms.crs.to_epsg() == 4326 and len(farms) == 3 * 3
    row = farms[(farms.farm_id == "w42") & (farms.method == "saliency")].iloc[0]
    assert row.mass_inside > 0
    assert abs(row.share_inside + row.share_ring + row.share_outside - 1) < 1e-6
    assert len(json.loads(row.top_bands)) == 3
    pngs = list((paths.stage_dir("attribute") / "quicklooks").rglob("*.png"))
    assert len(pngs) == 3 * 5  # one per (method, target kind)
    scene = paths.stage_dir("attribute") / "scene" / "saliency" / "patch" / "EPSG32618.tif"
    with rasterio.open(scene) as src:
        assert src.width == 64 + 2000 // 10 and src.height == 64

    # determinism: a re-run reproduces the sampled method bit for bit
    ks = paths.attribution("p00001", "kernel_shap", "predicted_mask")
    first = read_raster(ks)[0]
    again = load_config(
        CONFIG,
        [
            *overrides,
            "attribute.methods=[kernel_shap]",
            "attribute.targets=[predicted_mask]",
            "attribute.stitch=false",
        ],
    )
    run_stage("attribute", again)
    np.testing.assert_array_equal(read_raster(ks)[0], first)
    # the analyst polygon stays configured: one farm row (kernel_shap x "mine")
    assert pyogrio.read_info(paths.stage_dir("attribute") / "farms.gpkg")["features"] == 1


@pytest.mark.slow
def test_one_and_two_workers_write_the_same(tmp_path: Path) -> None:
    """Patches as Dask tasks: 1 and 2 workers give the same COG bytes and index rows, with a
    run-wide cap (allotted before any patch runs) and a sampled method."""
    built = build_run(tmp_path / "one")
    shutil.copytree(built.root, RunPaths(tmp_path / "two", "demo").root)
    overrides = [
        "attribute.methods=[saliency, kernel_shap]",
        "attribute.targets=[predicted_mask, patch, predicted_farms]",
        "attribute.n_superpixels=6",
        "attribute.shap_samples=16",
        "attribute.max_targets={kernel_shap: 2}",
        "attribute.max_quicklooks=1",
        "attribute.device=cpu",
        "compute.retries=0",
    ]
    runs = {}
    for name, workers in (("one", 1), ("two", 2)):
        cfg = load_config(
            CONFIG, [f"run.data_root={tmp_path / name}", f"compute.workers={workers}", *overrides]
        )
        run_stage("attribute", cfg)
        paths = RunPaths(tmp_path / name, "demo")
        index = pd.read_csv(paths.attribution_index, keep_default_na=False).drop(columns="seconds")
        index["reason"] = index.reason.str.replace(str(tmp_path / name), "<root>")
        cogs = {r: (paths.root / r).read_bytes() for r in index.path if r}
        pngs = sorted(p.relative_to(paths.root) for p in paths.quicklooks_dir.rglob("*.png"))
        runs[name] = (index, cogs, pngs)
    (index1, cogs1, pngs1), (index2, cogs2, pngs2) = runs["one"], runs["two"]
    pd.testing.assert_frame_equal(index1, index2)
    shap = index1[index1.method == "kernel_shap"]
    assert (shap.status == "ok").sum() == 2  # the cap kept the first two targets...
    assert shap.reason.str.startswith("budget").sum() >= 2  # ...and left the others out
    first = shap[shap.status == "ok"][["patch_id", "target"]].values.tolist()
    assert first == [["p00000", "predicted_mask"], ["p00000", "patch"]]
    assert cogs1.keys() == cogs2.keys() and len(cogs1) >= 6
    assert all(cogs1[k] == cogs2[k] for k in cogs1)
    assert pngs1 == pngs2 and len(pngs1) == 2 * 3 - 1  # per (method, kind) explained
