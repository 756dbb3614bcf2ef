"""Where a geometry falls on a raster grid: the pixel window of its bounds."""

from __future__ import annotations

import math

from affine import Affine
from shapely.geometry.base import BaseGeometry

from pipeline.geo.raster import Grid


def footprint_window(geom: BaseGeometry, grid: Grid) -> tuple[int, int, int, int] | None:
    """``(row0, row1, col0, col1)`` of the pixels ``geom``'s bounds touch, clipped to ``grid``.

    Returns:
        The half-open window, or ``None`` when ``geom`` misses the grid.
    """
    left, bottom, right, top = geom.bounds
    inv = ~grid.transform
    c0, r0 = inv @ (left, top)
    c1, r1 = inv @ (right, bottom)
    c0, r0 = max(0, math.floor(c0)), max(0, math.floor(r0))
    c1, r1 = min(grid.width, math.ceil(c1)), min(grid.height, math.ceil(r1))
    if c1 <= c0 or r1 <= r0:
        return None
    return r0, r1, c0, c1


def window_transform(grid: Grid, row0: int, col0: int, subdivide: int = 1) -> Affine:
    """Transform of a window of ``grid`` starting at ``(row0, col0)``, pixels split ``subdivide``
    times per side."""
    return (grid.transform @ Affine.translation(col0, row0)) @ Affine.scale(1.0 / subdivide)


def pixel_to_xy(grid: Grid, col: float, row: float) -> tuple[float, float]:
    """Projected coordinates of fractional pixel position ``(col, row)``."""
    x, y = grid.transform @ (col, row)
    return float(x), float(y)


def window_grid(grid: Grid, window: tuple[int, int, int, int]) -> Grid:
    """The sub-grid of ``grid`` covering the half-open pixel ``window`` ``(row0, row1, col0, col1)``
    (as :func:`footprint_window` returns it), in the same CRS and resolution."""
    r0, r1, c0, c1 = window
    return Grid(grid.crs, window_transform(grid, r0, c0), r1 - r0, c1 - c0)
