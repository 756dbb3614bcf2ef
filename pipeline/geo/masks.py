"""Label masks rasterized exactly onto a patch grid, and streamed band statistics.

Farms arrive in EPSG:4326; :func:`farms_on_grid` picks those near the grid and reprojects them
into the grid's CRS (each patch's own UTM zone, so a farm crossing a zone boundary is drawn in
both zones' patches). :func:`rasterize_mask` burns them with the pixel-centre rule (a pixel is
farm when its centre lies inside) or ``all_touched``. :class:`BandMoments` holds per-band count,
mean and M2 in float64 and merges exactly (Chan et al.), so statistics stream patch by patch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from rasterio.features import rasterize
from rasterio.warp import transform_bounds
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from pipeline.geo.crs import to_epsg
from pipeline.geo.raster import Grid


def grid_lonlat_bounds(grid: Grid) -> tuple[float, float, float, float]:
    """``(minlon, minlat, maxlon, maxlat)`` of a grid (densified edges)."""
    return transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21)


def grid_footprint_lonlat(grid: Grid) -> BaseGeometry:
    """The grid's outline as an EPSG:4326 polygon."""
    square = shapely.segmentize(box(*grid.bounds), max(grid.height, grid.width) * grid.res / 8)
    return to_epsg(square, 4326, src=int(grid.crs.to_epsg()), max_segment_deg=0)


def farms_on_grid(farms: gpd.GeoDataFrame, grid: Grid) -> tuple[list[str], list[BaseGeometry]]:
    """Farms (EPSG:4326, ``farm_id``) that intersect ``grid``, reprojected to its CRS.

    Returns:
        ``(farm ids, geometries in grid.crs)``, only farms whose interior meets the grid.
    """
    minx, miny, maxx, maxy = grid_lonlat_bounds(grid)
    pad = 1e-4
    idx = farms.sindex.query(box(minx - pad, miny - pad, maxx + pad, maxy + pad))
    epsg = grid.crs.to_epsg()
    if epsg is None:
        raise ValueError(f"grid CRS {grid.crs} has no EPSG code")
    frame = box(*grid.bounds)
    ids, geoms = [], []
    for i in sorted(int(k) for k in idx):
        g = to_epsg(farms.geometry.iloc[i], int(epsg))
        if g.intersection(frame).area > 0:
            ids.append(str(farms["farm_id"].iloc[i]))
            geoms.append(g)
    return ids, geoms


def rasterize_mask(
    geoms: list[BaseGeometry], grid: Grid, *, all_touched: bool = False
) -> np.ndarray:
    """Burn ``geoms`` (in ``grid.crs``) onto ``grid``.

    Returns:
        ``uint8`` array ``(height, width)``: 1 farm, 0 background.
    """
    if not geoms:
        return np.zeros(grid.shape, dtype=np.uint8)
    return rasterize(
        ((g, 1) for g in geoms),
        out_shape=grid.shape,
        transform=grid.transform,
        fill=0,
        all_touched=all_touched,
        dtype="uint8",
    )


def polygon_mask(geometry: BaseGeometry | None, grid: Grid) -> np.ndarray:
    """``(H, W)`` bool: pixels whose centre falls in ``geometry`` (in ``grid``'s CRS).

    A polygon too thin to cover a pixel centre falls back to every touched pixel, so a small
    farm never vanishes. Empty when the polygon misses the grid or is empty.
    """
    if geometry is None or geometry.is_empty:
        return np.zeros(grid.shape, dtype=bool)
    mask = rasterize_mask([geometry], grid).astype(bool)
    return mask if mask.any() else rasterize_mask([geometry], grid, all_touched=True).astype(bool)


def geometries_mask(geoms: Iterable[BaseGeometry | None], grid: Grid) -> np.ndarray:
    """``(H, W)`` bool union of :func:`polygon_mask` over ``geoms`` (each with its fallback)."""
    out = np.zeros(grid.shape, dtype=bool)
    for geom in geoms:
        out |= polygon_mask(geom, grid)
    return out


@dataclass(frozen=True)
class BandMoments:
    """Per-band count, mean and sum of squared deviations (float64), mergeable.

    Attributes:
        n: ``(bands,)`` valid pixel counts.
        mean: ``(bands,)`` means, in the data's units (stored DN).
        m2: ``(bands,)`` sums of squared deviations from the mean.
    """

    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, bands: int) -> BandMoments:
        z = np.zeros(bands, dtype=np.float64)
        return cls(z.copy(), z.copy(), z.copy())

    @classmethod
    def of(cls, image: np.ndarray, nodata: float | None = 0) -> BandMoments:
        """Moments of ``image`` ``(bands, H, W)``, skipping ``nodata`` pixels per band."""
        bands = image.shape[0]
        flat = image.reshape(bands, -1).astype(np.float64)
        valid = np.ones_like(flat, dtype=bool) if nodata is None else flat != nodata
        n = valid.sum(axis=1).astype(np.float64)
        sums = np.where(valid, flat, 0.0).sum(axis=1)
        mean = np.divide(sums, n, out=np.zeros(bands), where=n > 0)
        dev = np.where(valid, flat - mean[:, None], 0.0)
        return cls(n, mean, (dev * dev).sum(axis=1))

    def merge(self, other: BandMoments) -> BandMoments:
        """Exact moments of the union of both samples."""
        n = self.n + other.n
        delta = other.mean - self.mean
        safe = np.where(n > 0, n, 1.0)
        mean = self.mean + delta * other.n / safe
        m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / safe
        return BandMoments(n, np.where(n > 0, mean, 0.0), m2)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per band (0 where no pixel was valid)."""
        return np.sqrt(np.divide(self.m2, self.n, out=np.zeros_like(self.m2), where=self.n > 0))
