"""Whole-scene map benchmark: one full Sentinel-2 tile (10980 x 10980 px) through the map engine.

Issue 16's GPU target: a whole 10980 x 10980 scene mapped in at most 2 minutes on one GPU. The
scene is synthetic (no real tile of that size ships with the project, and nothing may be
downloaded): smooth random reflectance in every band on a tile-sized grid over the demo scene
(10 m and 20 m assets, an all-clear SCL), written as a static STAC catalog of one Earth Search
v1 item by the demo world's writer (:func:`pipeline.demo.stac.write_catalog`). It is then mapped
exactly as the map stage maps an area (:func:`pipeline.mapping.region.map_region`: chunk reads
from the COGs, composite, harmonization, the blended sliding window, chunk COGs, the zone mosaic
with overviews, the provenance raster, farms and the STAC catalog of the outputs) by a U-Net of
the demo's architecture whose output bias maps no farm (timing does not depend on the weights;
real farms are sparse, so the polygon step is small on a real tile too).

Reported: ``engine_seconds`` (the chunks on the Dask cluster), ``seconds`` (all of
``map_region``: the chunks plus publishing the mosaic and the rest), km²/s of each, the chunk
count and the cluster. ``python -m pipeline.bench map_scene``; ``BENCH_SCENE_SIDE`` (pixels,
a multiple of 2; default 10980 with a GPU, 4096 without) sets the scene's side.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import torch
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage
from shapely.geometry import shape

from pipeline.bands import BANDS, NATIVE_GSD
from pipeline.bench.map import save_no_farm_model
from pipeline.compute import open_client
from pipeline.config import RunConfig
from pipeline.config.compute import ComputeConfig
from pipeline.demo.calendar import RELATIVE_ORBIT, Acquisition
from pipeline.demo.stac import ItemData, footprint_lonlat, write_catalog
from pipeline.geo.raster import Grid
from pipeline.mapping.chunks import ModelRef, predictor
from pipeline.mapping.region import map_region
from pipeline.mapping.search import search_area
from pipeline.model.io import load_model
from pipeline.paths import RunPaths
from pipeline.stac.assets import signer_for
from pipeline.stac.source import StaticCatalogSource
from pipeline.stages.map import request_for

#: Upper-left corner of the synthetic tile in EPSG:32618: a 109.8 km square over the demo scene.
TILE_ORIGIN = (399960.0, 4200000.0)
SIDE = 10980
#: The default side without a GPU (168 km², a few minutes on 2 cores).
SIDE_CPU = 4096


def smooth_band(rng: np.random.Generator, side: int, level: float) -> np.ndarray:
    """uint16 DN of a smooth random field around ``level`` (reflectance x 10000)."""
    coarse = rng.normal(0.0, 1.0, (side // 64 + 2, side // 64 + 2))
    field = ndimage.zoom(coarse, side / (side // 64), order=1)[:side, :side]
    return np.clip(level + 400.0 * field, 1, 10000).astype(np.uint16)


def scene_grids(side: int) -> dict[int, Grid]:
    """The 10 m and 20 m grids of a ``side`` x ``side`` scene at :data:`TILE_ORIGIN`."""
    crs = CRS.from_epsg(32618)
    x0, y0 = TILE_ORIGIN
    return {
        gsd: Grid(crs, Affine(gsd, 0, x0, 0, -gsd, y0), side * 10 // gsd, side * 10 // gsd)
        for gsd in (10, 20)
    }


def write_scene(root: Path, side: int, seed: int = 0) -> Path:
    """A static catalog of one all-clear synthetic acquisition; returns its ``catalog.json``."""
    rng = np.random.default_rng(seed)
    grids = scene_grids(side)
    bands = {
        band: smooth_band(rng, grids[NATIVE_GSD[band]].height, 800.0 + 150.0 * i)
        for i, band in enumerate(BANDS)
    }
    scl = np.full(grids[20].shape, 4, np.uint8)  # vegetation: clear everywhere
    when = dt.datetime(2016, 1, 12, 15, 57, 2, tzinfo=dt.UTC)
    acquisition = Acquisition(when, "clear", 0.0, False, RELATIVE_ORBIT, 0)
    percentages = {code: 100.0 if code == 4 else 0.0 for code in range(12)}
    data = ItemData(acquisition, bands, scl, 0.0, percentages)
    return write_catalog(root / "stac", [data], grids)


def _config(root: Path, catalog: Path, device: str) -> RunConfig:
    return RunConfig.model_validate(
        {
            "run": {"name": "scene", "data_root": str(root / "data")},
            "labels": {"source": "file", "osm_file": "unused.osm.pbf"},
            "fetch": {
                "catalog": str(catalog),
                "provider": "static",
                "datetime": "2016-01-01/2016-01-31",
                "progress": False,
            },
            "predict": {"window": 256, "overlap": 64, "device": device, "batch_size": 64},
            "map": {"chunk_px": 2048, "halo_px": 64, "farm_patches": False},
        }
    )


def _warm(model: ModelRef, device: str, threads: int, batch: int) -> None:
    """Import torch, load the model onto the device and run it once, in a worker."""
    predictor(model, device, threads, batch)(np.ones((1, len(BANDS), 256, 256), np.uint16))


def main(side: int | None = None, workers: int | None = None) -> dict[str, Any]:
    """Write the scene, map it once with a warm cluster, return the timings."""
    cuda = torch.cuda.is_available()
    side = side or int(os.environ.get("BENCH_SCENE_SIDE", SIDE if cuda else SIDE_CPU))
    workers = workers or int(os.environ.get("BENCH_SCENE_WORKERS", 8 if cuda else 2))
    threads = max(1, (os.cpu_count() or 2) // workers)
    with tempfile.TemporaryDirectory(prefix="bench-scene-") as tmp_name:
        root = Path(tmp_name)
        start = time.perf_counter()
        catalog = write_scene(root, side)
        write_s = time.perf_counter() - start
        cfg = _config(root, catalog, "cuda" if cuda else "cpu")
        paths = RunPaths(cfg.run.data_root, cfg.run.name)
        save_no_farm_model(paths.model)
        area = shape(footprint_lonlat(scene_grids(side)[10])).buffer(-1e-4)
        request = request_for(cfg, paths, area, loader=load_model)
        request = replace(request, settings=replace(request.settings, threads=threads))
        items = search_area(StaticCatalogSource(str(catalog)), request.query)
        compute = ComputeConfig(workers=workers, threads_per_worker=threads)
        with open_client(compute) as client:
            st = request.settings
            client.run(_warm, st.model, st.device, threads, st.window.batch_size)
            start = time.perf_counter()
            _, summary = map_region(
                request, items, paths, client, signer_for("static"), gpd.GeoDataFrame()
            )
            seconds = time.perf_counter() - start
    km2 = summary["km2_mapped"]
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "side_px": side,
        "km2": km2,
        "chunks": summary["chunks"]["total"],
        "workers": workers,
        "threads_per_worker": threads,
        "scene_write_seconds": round(write_s, 1),
        "engine_seconds": summary["engine_seconds"],
        "seconds": round(seconds, 2),
        "engine_km2_per_s": round(km2 / summary["engine_seconds"], 2),
        "km2_per_s": round(km2 / seconds, 2),
        "mapped_farms": summary["mapped_farms"],
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
