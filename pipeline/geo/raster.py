"""Raster I/O at the edges: one export profile, atomic COG writes, checked patch reads.

Every GeoTIFF the pipeline writes goes through :func:`write_cog`: tiled, compressed,
overviews, nodata set, band descriptions from data (never prose), tags as strings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile

from pipeline.bands import BANDS
from pipeline.errors import GeoMismatchError, RasterError
from pipeline.io import atomic_path

#: Creation options of every COG the pipeline writes (rasterio's profiles idea, named once).
COG_OPTIONS: Final[dict[str, Any]] = {
    "driver": "COG",
    "compress": "DEFLATE",
    "level": 1,  # fast: write_cog was the largest CPU cost per fetched patch
    "predictor": "YES",
    "blocksize": 256,
    "overview_resampling": "average",
    "BIGTIFF": "IF_SAFER",
}


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and shape ``(height, width)``."""

    crs: CRS
    transform: Affine
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the grid's CRS."""
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return (min(left, right), min(bottom, top), max(left, right), max(bottom, top))

    @property
    def res(self) -> float:
        return float(abs(self.transform.a))


@dataclass(frozen=True)
class BandEncoding:
    """What a raster's bands mean, as GDAL metadata (read by QGIS, GDAL and rasterio).

    Attributes:
        scale: Band scale: physical value = stored value x scale + offset (``None``: unset).
        offset: Band offset (with ``scale``).
        colormap: Colour table of band 1 (value -> RGBA), for classes and masks.
        band_tags: Metadata of band 1 (e.g. the class names, ``CLASS_4=vegetation``).
    """

    scale: float | None = None
    offset: float = 0.0
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None
    band_tags: Mapping[str, str] = field(default_factory=dict)

    def apply(self, dst: Any) -> None:
        """Write the encoding into an open rasterio dataset (before it is closed)."""
        if self.scale is not None:
            dst.scales = (self.scale,) * dst.count
            dst.offsets = (self.offset,) * dst.count
        if self.colormap is not None:
            dst.write_colormap(1, dict(self.colormap))
        if self.band_tags:
            dst.update_tags(1, **self.band_tags)


def union_grid(grids: Sequence[Grid]) -> Grid:
    """The smallest north-up grid holding every grid (same CRS and pixel size).

    Raises:
        GeoMismatchError: no grids, or their CRS, pixel size or orientation differ.
    """
    if not grids:
        raise GeoMismatchError("cannot join zero grids; pass at least one")
    first = grids[0]
    res = first.res
    for g in grids:
        if g.crs != first.crs or abs(g.res - res) > 1e-9 or g.transform.b or g.transform.d:
            raise GeoMismatchError(
                f"cannot join a grid in {g.crs} at {g.res} m with one in "
                f"{first.crs} at {res} m; join one UTM zone at a time"
            )
    left = min(g.bounds[0] for g in grids)
    top = max(g.bounds[3] for g in grids)
    right = max(g.bounds[2] for g in grids)
    bottom = min(g.bounds[1] for g in grids)
    return Grid(
        first.crs,
        Affine(res, 0, left, 0, -res, top),
        round((top - bottom) / res),
        round((right - left) / res),
    )


def _tag_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def write_cog(
    path: str | Path,
    array: np.ndarray,
    grid: Grid,
    *,
    band_names: Sequence[str],
    nodata: float | int | None = None,
    tags: Mapping[str, Any] | None = None,
    overview_resampling: str | None = None,
    encoding: BandEncoding | None = None,
) -> Path:
    """Write ``array`` (bands, H, W) as a Cloud-Optimized GeoTIFF, atomically.

    Args:
        path: Destination; written to a temporary name then renamed.
        array: ``(bands, height, width)`` array; its dtype is kept.
        grid: CRS, transform and shape; must match ``array``'s last two axes.
        band_names: One description per band (e.g. :data:`pipeline.bands.BANDS`).
        nodata: Nodata value recorded in the file.
        tags: Dataset tags; non-strings are JSON-encoded.
        overview_resampling: ``nearest`` for masks and classes; default ``average``.
        encoding: Band scale/offset, colour table and band metadata (none by default).

    Raises:
        RasterError: shapes disagree or GDAL fails.
    """
    if array.ndim != 3 or array.shape[1:] != grid.shape:
        raise RasterError(
            f"cannot write {path}: array shape {array.shape} does not match grid "
            f"{grid.shape} (expected (bands, {grid.height}, {grid.width}))"
        )
    if len(band_names) != array.shape[0]:
        raise RasterError(
            f"cannot write {path}: {array.shape[0]} bands but {len(band_names)} band names"
        )
    profile = {
        "driver": "GTiff",
        "count": array.shape[0],
        "dtype": array.dtype.name,
        "height": grid.height,
        "width": grid.width,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
    }
    options = dict(COG_OPTIONS)
    if overview_resampling:
        options["overview_resampling"] = overview_resampling
    if array.dtype.kind == "f":
        options["predictor"] = "FLOATING_POINT" if array.dtype.itemsize >= 4 else "NO"
    if min(grid.shape) < 512:
        options["overviews"] = "NONE" if min(grid.shape) <= 256 else "AUTO"
    try:
        with MemoryFile() as mem:
            with mem.open(**profile) as dst:
                dst.write(array)
                for i, name in enumerate(band_names, start=1):
                    dst.set_band_description(i, name)
                dst.update_tags(**{k: _tag_value(v) for k, v in (tags or {}).items()})
                if encoding is not None:
                    encoding.apply(dst)
            with mem.open() as src, atomic_path(path) as tmp:
                rasterio.shutil.copy(src, tmp, **options)
    except RasterioError as err:
        raise RasterError(f"GDAL could not write {path}: {err}") from err
    return Path(path)


def read_grid(path: str | Path) -> Grid:
    """The grid of a raster file."""
    try:
        with rasterio.open(path) as src:
            return Grid(src.crs, src.transform, src.height, src.width)
    except RasterioError as err:
        raise RasterError(
            f"cannot open raster {path}: {err}. Re-create it by re-running the "
            "stage that wrote it (with --force)"
        ) from err


def read_raster(
    path: str | Path, *, expect_bands: Sequence[str] | None = None
) -> tuple[np.ndarray, Grid, dict[str, str]]:
    """Read a whole raster and check its band descriptions.

    Args:
        path: A GeoTIFF.
        expect_bands: Required band descriptions, in order (e.g. :data:`BANDS`).

    Returns:
        ``(array (bands, H, W), grid, tags)``.

    Raises:
        RasterError: the file is unreadable or truncated, or its bands are not ``expect_bands``.
    """
    try:
        with rasterio.open(path) as src:
            names = tuple(d or "" for d in src.descriptions)
            if expect_bands is not None and names != tuple(expect_bands):
                raise RasterError(
                    f"{path} has bands {list(names)} but {list(expect_bands)} are required, in "
                    "that order. Re-fetch the patch (make fetch) or fix the band mapping."
                )
            array = src.read()
            return array, Grid(src.crs, src.transform, src.height, src.width), src.tags()
    except RasterioError as err:
        raise RasterError(
            f"cannot read raster {path}: {err}. The file is corrupt or truncated; "
            "delete it and re-run the stage that wrote it"
        ) from err


def read_decimated(
    path: str | Path, bands: Sequence[int], max_side: int = 1024
) -> tuple[np.ndarray, tuple[str, ...]]:
    """``bands`` (1-based) of a raster read at most ``max_side`` pixels a side (nearest).

    For statistics of large mosaics (a colour stretch): GDAL reads overviews or skips pixels.

    Returns:
        ``(array (len(bands), h, w) in the stored dtype, descriptions of those bands)``.

    Raises:
        RasterError: the file cannot be read.
    """
    try:
        with rasterio.open(path) as src:
            factor = max(1.0, max(src.height, src.width) / max_side)
            shape = (
                len(bands),
                max(1, round(src.height / factor)),
                max(1, round(src.width / factor)),
            )
            array = src.read(list(bands), out_shape=shape)
            return array, tuple(src.descriptions[b - 1] or "" for b in bands)
    except RasterioError as err:
        raise RasterError(f"cannot read raster {path}: {err}; re-run its stage") from err


def read_patch(path: str | Path) -> tuple[np.ndarray, Grid, dict[str, str]]:
    """A fetched 10-band patch, checked against :data:`pipeline.bands.BANDS`."""
    return read_raster(path, expect_bands=BANDS)
