"""What the report reads: the map's mosaic when the run has a map, else the fetched patches."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import box

from pipeline.bands import BANDS
from pipeline.geo.raster import Grid, write_cog
from pipeline.paths import RunPaths
from pipeline.report.inputs import read_truecolour, truecolour_sources

GRID = Grid(CRS.from_epsg(32618), Affine(10, 0, 440_000, 0, -10, 4_170_000), 256, 256)


def test_background_is_the_maps_mosaic_when_there_is_one(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path, "r")
    image = np.full((len(BANDS), 256, 256), 900, np.uint16)
    write_cog(paths.image("p1"), image, GRID, band_names=BANDS, nodata=0)
    footprint = gpd.GeoSeries([box(*GRID.bounds)], crs=GRID.crs).to_crs(4326)
    rows = gpd.GeoDataFrame({"patch_id": ["p1"], "status": ["ok"]}, geometry=footprint)
    rows.to_file(paths.fetch_index, layer="patches", driver="GPKG")
    files, source = truecolour_sources(paths, {32618})
    assert files == [paths.image("p1")] and "fetched patches" in source
    (array, grid) = next(read_truecolour(files, side=64))
    assert array.shape == (3, 64, 64) and grid.res == 40.0  # read small, grid scaled with it
    assert grid.bounds == GRID.bounds
    rgb = np.full((3, 256, 256), 120, np.uint8)
    write_cog(paths.map_truecolour(32618), rgb, GRID, band_names=["red", "green", "blue"])
    files, source = truecolour_sources(paths, {32618, 32617})
    assert files == [paths.map_truecolour(32618)] and source.startswith("the map's")
