"""A small demo world with label errors, its labels, and model outputs written from its truth.

The world (8 farms: 2 unmapped, 2 ghost labels, 1 shifted outline) is built by the real
:func:`~pipeline.demo.build_world` and read by the real labels stage. The "model" is written
from the planted truth: every planted farm mapped with a high probability (a little eroded),
every distractor with a lower one; nothing where the ghosts are. The triage never sees the
truth; the tests score it against the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from pipeline.config import RunConfig
from pipeline.demo import build_world, load_truth
from pipeline.demo.truth import Truth
from pipeline.manifest import Manifest
from pipeline.mapping.farms import farm_frame
from pipeline.paths import RunPaths
from pipeline.stages import run_stage
from support.world import label_error_config

FARM_PROB, DISTRACTOR_PROB = 0.85, 0.55


@dataclass(frozen=True)
class TriageWorld:
    cfg: RunConfig
    paths: RunPaths
    truth: Truth


def stub_manifest(paths: RunPaths, stage: str) -> None:
    """A manifest for a stage whose outputs the test writes itself."""
    Manifest(stage, "test", {}, [], {}, 0.0, {}).write(paths.manifest(stage))


def model_rows(truth: Truth, seed: int = 0) -> list[dict]:
    """Mapped-farm rows (EPSG:4326) of the planted farms and distractors, as the map writes."""
    rng = np.random.default_rng(seed)
    parts = [
        (truth.farms.geometry.buffer(-10), FARM_PROB),
        (truth.distractors.geometry, DISTRACTOR_PROB),
    ]
    rows = []
    for geoms, prob in parts:
        for geom in geoms:
            if geom.is_empty:
                continue
            mean = float(np.clip(prob + rng.normal(0, 0.03), 0, 1))
            rows.append(
                {
                    "area_ha": geom.area / 1e4,
                    "mean_prob": mean,
                    "max_prob": min(1.0, mean + 0.1),
                    "pixels": int(geom.area / 100),
                    "acquisitions": "S2A_18SVG_20160112_0_L2A",
                    "dates": "2016-01-12",
                    "epsg": "32618",
                    "_zone": 32618,
                    "geometry": gpd.GeoSeries([geom], crs=32618).to_crs(4326).iloc[0],
                }
            )
    return rows


def write_map(paths: RunPaths, truth: Truth, match_iou: float = 0.5) -> gpd.GeoDataFrame:
    """``map/farms.gpkg`` from :func:`model_rows`, matched to the labels by the map's code."""
    labels = gpd.read_file(paths.farms).to_crs(4326)
    farms = farm_frame(model_rows(truth), labels, match_iou)
    paths.map_farms.parent.mkdir(parents=True, exist_ok=True)
    farms.to_file(paths.map_farms, layer="farms", driver="GPKG")
    stub_manifest(paths, "map")
    return farms


def write_predicted(paths: RunPaths, truth: Truth) -> gpd.GeoDataFrame:
    """``predict/farms.gpkg`` from :func:`model_rows`, each polygon cut in two halves as two
    overlapping patches would see it (the triage merges them back)."""
    rows = []
    for k, row in enumerate(model_rows(truth)):
        geom = row["geometry"]
        minx, miny, maxx, maxy = geom.bounds
        mid = (minx + maxx) / 2
        for half, (x0, x1) in enumerate(((minx, mid), (mid, maxx))):
            from shapely.geometry import box

            part = geom.intersection(box(x0, miny, x1, maxy))
            if part.is_empty:
                continue
            rows.append(
                {
                    "pred_id": f"p{k:03d}_{half}",
                    "patch_id": f"patch{half}",
                    "area_m2": row["area_ha"] * 5e3,
                    "pixels": row["pixels"] // 2,
                    "mean_prob": row["mean_prob"],
                    "max_prob": row["max_prob"],
                    "geometry": part,
                }
            )
    frame = gpd.GeoDataFrame(pd.DataFrame(rows), geometry="geometry", crs=4326)
    paths.predicted_farms.parent.mkdir(parents=True, exist_ok=True)
    frame.to_file(paths.predicted_farms, layer="farms", driver="GPKG")
    return frame


def build_triage_world(root: Path) -> TriageWorld:
    """The world, its labels (labels stage) and a stub predict manifest."""
    cfg = label_error_config(root)
    world = build_world(cfg)
    run_stage("labels", cfg)
    paths = RunPaths(cfg.run.data_root, cfg.run.name)
    stub_manifest(paths, "predict")
    return TriageWorld(cfg, paths, load_truth(world))


@pytest.fixture(scope="session")
def triage_world(tmp_path_factory: pytest.TempPathFactory) -> TriageWorld:
    """The small label-error world with its labels, built once per session (about 7 s)."""
    return build_triage_world(tmp_path_factory.mktemp("triage_world"))


def fresh_run(world: TriageWorld, name: str) -> tuple[RunConfig, RunPaths]:
    """A new run of the same world holding a copy of its labels and a stub predict manifest."""
    import shutil

    cfg = label_error_config(world.cfg.run.data_root, f"run.name={name}")
    paths = RunPaths(cfg.run.data_root, name)
    shutil.rmtree(paths.root, ignore_errors=True)
    shutil.copytree(world.paths.stage_dir("labels"), paths.stage_dir("labels"))
    stub_manifest(paths, "predict")
    return cfg, paths


def write_map_rasters(paths: RunPaths, truth: Truth) -> None:
    """The map's probability and provenance COGs over the world (10 m, EPSG:32618): 0.9 on
    planted farms, 0.05 elsewhere, all from acquisition 1 (2016-01-12), and its table."""
    from affine import Affine
    from rasterio.crs import CRS

    from pipeline.geo.masks import geometries_mask
    from pipeline.geo.raster import Grid, write_cog

    minx, miny, maxx, maxy = truth.farms.total_bounds
    minx, miny, maxx, maxy = minx - 1000, miny - 1000, maxx + 1000, maxy + 1000
    width, height = int((maxx - minx) // 10), int((maxy - miny) // 10)
    grid = Grid(CRS.from_epsg(32618), Affine(10, 0, minx, 0, -10, maxy), height, width)
    farms = geometries_mask(truth.farms.geometry, grid)
    prob = np.where(farms, 0.9, 0.05).astype(np.float32)[None]
    write_cog(paths.map_probability(32618), prob, grid, band_names=["probability"])
    src = np.ones((1, height, width), np.uint8)
    write_cog(paths.map_provenance(32618), src, grid, band_names=["acquisition"], nodata=0)
    paths.map_acquisitions.write_text(
        "index,scene_key,item_ids,datetime,platform,processing_baseline,harmonization\n"
        "1,k,S2A_18SVG_20160112_0_L2A,2016-01-12T15:59:00Z,sentinel-2a,02.01,none\n"
    )
