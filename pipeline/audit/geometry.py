"""Geometry on a patch grid for the audit: reprojection into the grid and crop windows."""

from __future__ import annotations

import numpy as np
from rasterio.crs import CRS
from shapely.geometry.base import BaseGeometry

from pipeline.geo.crs import to_epsg
from pipeline.geo.raster import Grid


def to_grid_crs(geom: BaseGeometry, src_crs: CRS | str, grid: Grid) -> BaseGeometry:
    """``geom`` from ``src_crs`` into the grid's CRS (vertices as they are, no densifying)."""
    src, dst = CRS.from_user_input(src_crs), grid.crs
    if src == dst:
        return geom
    return to_epsg(geom, int(dst.to_epsg()), src=int(src.to_epsg()), max_segment_deg=0)


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
