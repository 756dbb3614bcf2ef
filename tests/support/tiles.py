"""Fixtures of the tiles stage tests: a labelled run plus a hand-made fetch stage (real COGs)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from pipeline.bands import BANDS
from pipeline.config import RunConfig
from pipeline.geo.raster import Grid, write_cog
from pipeline.manifest import Manifest
from pipeline.paths import RunPaths
from pipeline.stages import run_stage
from support.osm import demo_features


@dataclass(frozen=True)
class LabelledRun:
    cfg: RunConfig
    paths: RunPaths
    skipped: str  # the patch id the fake fetch marked "skipped"


def fake_fetch(paths: RunPaths, seed: int = 0) -> str:
    """Write a 10-band uint16 COG and an SCL COG per planned patch, the fetch index (last
    patch "skipped") and a fetch manifest. Returns the skipped patch id."""
    plan = gpd.read_file(paths.plan, layer="plan")
    rng = np.random.default_rng(seed)
    rows = []
    for k, row in enumerate(plan.itertuples()):
        skipped = k == len(plan) - 1
        grid = Grid(
            CRS.from_epsg(row.epsg),
            Affine(row.gsd, 0, row.x0, 0, -row.gsd, row.y0),
            row.size,
            row.size,
        )
        if not skipped:
            coarse = rng.integers(
                100, 4000, size=(len(BANDS), row.size // 8, row.size // 8), dtype=np.uint16
            )
            image = np.kron(coarse, np.ones((8, 8), dtype=np.uint16))  # compresses fast
            image[0, :3, :] = 0  # a nodata strip in B02
            write_cog(paths.image(row.patch_id), image, grid, band_names=BANDS, nodata=0)
            scl = np.full((1, row.size, row.size), 4, dtype=np.uint8)
            write_cog(
                paths.scl(row.patch_id),
                scl,
                grid,
                band_names=("SCL",),
                nodata=0,
                overview_resampling="nearest",
            )
        rows.append(
            {
                "patch_id": row.patch_id,
                "status": "skipped" if skipped else "ok",
                "reason": "clear fraction 0.10 < 0.5" if skipped else "",
                "image": "" if skipped else paths.relative(paths.image(row.patch_id)),
                "scl": "" if skipped else paths.relative(paths.scl(row.patch_id)),
                "geometry": row.geometry,
            }
        )
    gpd.GeoDataFrame(rows, geometry="geometry", crs=4326).to_file(
        paths.fetch_index, layer="patches", driver="GPKG"
    )
    Manifest("fetch", "test", {}, [], {}, 0.0, {}).write(paths.manifest("fetch"))
    return str(plan["patch_id"].iloc[-1])


@pytest.fixture(scope="module")
def _base_run(tmp_path_factory: pytest.TempPathFactory) -> LabelledRun:
    """Labels (through run_stage) and a fake fetch for the hand-written extract, built once."""
    root = tmp_path_factory.mktemp("tiles_base")
    b = demo_features()
    minx, miny, maxx, maxy = b.bounds()
    osm = b.write_osm(root / "demo.osm", (minx - 0.03, miny - 0.03, maxx + 0.03, maxy + 0.03))
    cfg = RunConfig.model_validate(
        {
            "run": {"name": "t", "seed": 0, "data_root": str(root / "data")},
            "labels": {"osm_file": str(osm), "negative_buffer_m": 300, "block_size_m": 2560},
            "fetch": {"catalog": "unused"},
            "tiles": {"block_size_m": 2560},
        }
    )
    paths = RunPaths(cfg.run.data_root, cfg.run.name)
    run_stage("labels", cfg)
    return LabelledRun(cfg, paths, fake_fetch(paths))


@pytest.fixture
def labelled_run(_base_run: LabelledRun, tmp_path: Path) -> LabelledRun:
    """A private copy of the labelled and fetched run (tests may damage it)."""
    data = tmp_path / "data"
    shutil.copytree(_base_run.cfg.run.data_root, data)
    cfg = _base_run.cfg.model_copy(
        update={"run": _base_run.cfg.run.model_copy(update={"data_root": data})}
    )
    return LabelledRun(cfg, RunPaths(data, cfg.run.name), _base_run.skipped)
