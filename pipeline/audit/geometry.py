"""Polygons and windows on a patch grid (pure: shapely geometries in, arrays out)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import shapely
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.features import rasterize
from shapely.geometry.base import BaseGeometry

from pipeline.geo.raster import Grid


def to_grid_crs(geom: BaseGeometry, src_crs: CRS | str, grid: Grid) -> BaseGeometry:
    """``geom`` from ``src_crs`` into the grid's CRS (always_xy)."""
    src = CRS.from_user_input(src_crs)
    if src == grid.crs:
        return geom
    fwd = Transformer.from_crs(src, grid.crs, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(fwd.transform(xy[:, 0], xy[:, 1])))


def geometries_mask(geoms: Iterable[BaseGeometry], grid: Grid) -> np.ndarray:
    """``(H, W)`` bool: pixels whose centre is inside any geometry (in the grid's CRS).

    A geometry too small to cover a pixel centre is burned with ``all_touched`` instead, so a
    small farm is never an empty mask by accident.
    """
    out = np.zeros(grid.shape, dtype=bool)
    for geom in geoms:
        if geom is None or geom.is_empty:
            continue
        shapes = [(shapely.geometry.mapping(geom), 1)]
        burned = rasterize(
            shapes, out_shape=grid.shape, transform=grid.transform, fill=0, dtype="uint8"
        ).astype(bool)
        if not burned.any():
            burned = rasterize(
                shapes,
                out_shape=grid.shape,
                transform=grid.transform,
                fill=0,
                dtype="uint8",
                all_touched=True,
            ).astype(bool)
        out |= burned
    return out


def crop_window(mask: np.ndarray, size: int) -> tuple[slice, slice]:
    """A ``size`` x ``size`` window (clamped to the array) centred on ``mask``'s centroid.

    Falls back to the array centre when ``mask`` is empty; the window shrinks to the array when
    the array is smaller than ``size``.
    """
    height, width = mask.shape
    if mask.any():
        rows, cols = np.nonzero(mask)
        cr, cc = int(rows.mean()), int(cols.mean())
    else:
        cr, cc = height // 2, width // 2
    sh, sw = min(size, height), min(size, width)
    r0 = int(np.clip(cr - sh // 2, 0, height - sh))
    c0 = int(np.clip(cc - sw // 2, 0, width - sw))
    return slice(r0, r0 + sh), slice(c0, c0 + sw)
