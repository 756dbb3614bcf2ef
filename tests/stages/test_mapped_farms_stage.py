"""``targets: [mapped_farms]``: the map stage's farms explained and audited on their patches.

The map stage runs for real on the map tests' world (a 1x1-conv stand-in finds the planted
farms and cuts a composite patch around each); a tiny U-Net then stands in for the trained
model of the attribute and audit stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from support.mapping import FARMS, World, main_scenes, run_map, write_catalog

from pipeline.audit.patches import load_patch
from pipeline.bands import BANDS
from pipeline.compute import open_client
from pipeline.config import RunConfig
from pipeline.config.compute import ComputeConfig
from pipeline.geo.masks import grid_footprint_lonlat
from pipeline.geo.styles import style_path
from pipeline.manifest import Manifest
from pipeline.model.io import Arch, ModelMeta, build_unet, save_model
from pipeline.paths import RunPaths
from pipeline.stages import run_stage


def _mapped_run(root: Path, client: Any) -> tuple[RunConfig, RunPaths]:
    """The map on ``client``; the config's stages use the same cluster (by its address)."""
    scenes = main_scenes()
    catalog = write_catalog(root / "stac", scenes)
    world = World(root, catalog, grid_footprint_lonlat(scenes[0].grid(10)), dict(FARMS))
    paths, _ = run_map(world, "r", client, map_section={"farm_patches": True})
    base = world.config("r", farm_patches=True).model_dump(mode="json")
    cfg = RunConfig.model_validate(
        {
            **base,
            "attribute": {
                "methods": ["saliency"],
                "targets": ["mapped_farms"],
                "device": "cpu",
                "quicklooks": False,
            },
            "audit": {
                "bootstrap": 50,
                "counterfactual_scope": "all",
                "sanity_patches": 0,
                "faithfulness_patches": 0,
            },
            "compute": {"scheduler": client.scheduler.address, "retries": 0},
        }
    )
    torch.manual_seed(0)
    arch = Arch(encoder="resnet18", encoder_depth=3, decoder_channels=(16, 8, 4))
    meta = ModelMeta(BANDS, tuple([1500.0] * 10), tuple([800.0] * 10), arch, threshold=0.5)
    save_model(paths.model, build_unet(arch).eval(), meta)
    for stage in ("tiles", "train", "predict", "map"):
        Manifest(stage, "x", {}, [], {}, 0.0).write(paths.manifest(stage))
    return cfg, paths


@pytest.mark.slow
def test_every_mapped_farm_is_explained_and_audited(tmp_path: Path) -> None:
    with open_client(ComputeConfig(workers=1, threads_per_worker=1)) as client:
        cfg, paths = _mapped_run(tmp_path, client)
        _check_mapped_run(cfg, paths)


def _check_mapped_run(cfg: RunConfig, paths: RunPaths) -> None:
    farms = gpd.read_file(paths.map_farms)
    ids = set(farms["farm_id"])
    assert len(ids) == len(FARMS)

    manifest = run_stage("attribute", cfg)
    assert manifest.summary["mapped_farm_patches"] == len(ids)
    assert "map" in manifest.inputs  # a re-run of the map makes attribute stale
    index = pd.read_csv(paths.attribution_index, dtype=str, keep_default_na=False)
    ok = index[index.status == "ok"]
    assert set(ok.target) == {"mapped_farms"} and set(ok.target_id) == ids
    assert (ok.patch_id == ok.target_id).all()  # each farm on its own patch, only there
    for fid in ids:
        cog = paths.attribution(fid, "saliency", "mapped_farms", fid)
        with rasterio.open(cog) as src, rasterio.open(paths.map_patch(fid)) as patch:
            assert src.transform == patch.transform and src.crs == patch.crs
            assert src.tags()["target_id"] == fid
        assert style_path(cog).is_file()
    table = gpd.read_file(paths.attribution_farms)
    assert set(table.kind) == {"mapped_farms"} and set(table.farm_id) == ids

    run_stage("audit", cfg)
    flags = gpd.read_file(paths.flags_gpkg, layer="flags")
    assert set(flags.target) == {"mapped_farms"} and set(flags.target_id) == ids
    relation = farms.set_index("farm_id")["in_osm"].map(lambda v: str(bool(v)).lower())
    assert flags.set_index("target_id")["in_osm"].to_dict() == relation.to_dict()
    assert flags.geometry.notna().all()
    cf = pd.read_csv(paths.flags, dtype={"target_id": str})
    assert set(cf.target_id) == ids and (cf.cf_status.notna()).all()

    # the audit's predicted mask on a farm's patch is the mapped farms there
    fid = sorted(ids)[0]
    p = load_patch(
        paths, cfg, fid, {}, {("mapped_farms", fid): farms.set_index("farm_id").geometry[fid]}
    )
    assert p.predicted.any() and not p.predicted.all()
    assert np.array_equal(p.labels, p.labels.astype(bool))
