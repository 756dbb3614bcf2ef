"""Binary masks -> polygons with ids, area in m² and probability statistics.

Components are 4-connected (the same rule as :func:`pipeline.model.evaluate.components`), so
each labelled component becomes exactly one polygon (holes kept). Areas are computed in the
raster's own CRS when it is projected in metres (the patch's UTM zone), geodesically otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import rasterio.features
from scipy import ndimage
from shapely.geometry import shape

from pipeline.geo.raster import Grid
from pipeline.io import atomic_path

#: Columns of every polygon table this module returns (besides ``geometry``).
COLUMNS = ("id", "patch_id", "area_m2", "pixels", "mean_prob", "max_prob")


def _areas_m2(frame: gpd.GeoDataFrame) -> np.ndarray:
    crs = frame.crs
    if crs is not None and crs.is_projected and crs.axis_info[0].unit_name in ("metre", "meter"):
        return frame.geometry.area.to_numpy(dtype=np.float64)
    geod = pyproj.Geod(ellps="WGS84")
    wgs = frame.to_crs(4326) if crs is not None else frame
    return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in wgs.geometry], np.float64)


def labels_to_polygons(
    labels: np.ndarray,
    grid: Grid,
    *,
    patch_id: str,
    prob: np.ndarray | None = None,
    id_prefix: str = "",
) -> gpd.GeoDataFrame:
    """Polygonize labelled components (``1..n``; 0 background) in the grid's CRS.

    Args:
        labels: ``(H, W)`` integer labels on ``grid``.
        grid: CRS and transform of ``labels``.
        patch_id: Written into every row.
        prob: Optional ``(H, W)`` probabilities for ``mean_prob``/``max_prob`` (NaN otherwise).
        id_prefix: Ids are ``f"{id_prefix}{patch_id}_{label:03d}"``.

    Returns:
        One row per label, ordered by label, columns :data:`COLUMNS` + geometry, in ``grid.crs``.
    """
    labels = np.asarray(labels, np.int32)
    n = int(labels.max(initial=0))
    index = np.arange(1, n + 1)
    pixels = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    mean_prob, max_prob = np.full(n, np.nan), np.full(n, np.nan)
    present = pixels > 0  # labels 1..n need not all occur (a caller may have dropped some)
    if prob is not None and present.any():
        mean_prob[present] = ndimage.mean(prob, labels, index[present])
        max_prob[present] = ndimage.maximum(prob, labels, index[present])
    geoms: dict[int, list] = {}
    for geom, value in rasterio.features.shapes(
        labels, mask=labels > 0, transform=grid.transform, connectivity=4
    ):
        geoms.setdefault(int(value), []).append(shape(geom))
    polygons = []
    for label in index.tolist():
        parts = geoms.get(label, [])
        polygons.append(parts[0] if len(parts) == 1 else shape_union(parts))
    frame = gpd.GeoDataFrame(
        {
            "id": [f"{id_prefix}{patch_id}_{k:03d}" for k in index.tolist()],
            "patch_id": [patch_id] * n,
            "area_m2": np.zeros(n),
            "pixels": pixels.astype(np.int64),
            "mean_prob": mean_prob,
            "max_prob": max_prob,
        },
        geometry=polygons,
        crs=grid.crs,
    )
    if n:
        frame["area_m2"] = _areas_m2(frame)
    return frame


def shape_union(parts: list) -> object:
    """Union of polygon parts of one component (only when GDAL split one, which is rare)."""
    from shapely.ops import unary_union

    return unary_union(parts)


def mask_to_polygons(
    mask: np.ndarray,
    grid: Grid,
    *,
    patch_id: str,
    prob: np.ndarray | None = None,
    min_area_m2: float = 0.0,
) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Components of a binary mask as polygons, dropping those smaller than ``min_area_m2``.

    Args:
        mask: ``(H, W)`` bool or 0/1 array on ``grid``.
        grid: The mask's grid.
        patch_id: Written into every row.
        prob: Optional probabilities for ``mean_prob``/``max_prob``.
        min_area_m2: Smallest kept polygon area in m².

    Returns:
        ``(polygons in grid.crs, labels (H, W) int32 of the kept components renumbered 1..n)``;
        polygon ``k`` (0-based row) is label ``k + 1``.
    """
    from pipeline.model.evaluate import components

    labels, _ = components(np.asarray(mask) > 0)
    frame = labels_to_polygons(labels, grid, patch_id=patch_id, prob=prob)
    keep = frame["area_m2"].to_numpy() >= min_area_m2
    remap = np.zeros(len(frame) + 1, np.int32)
    remap[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    kept = frame[keep].reset_index(drop=True)
    kept["id"] = [f"{patch_id}_{k:03d}" for k in range(1, len(kept) + 1)]
    return kept, remap[labels]


def empty_polygons(crs: object = "EPSG:4326") -> gpd.GeoDataFrame:
    """An empty polygon table with :data:`COLUMNS` (for GeoPackages with no rows)."""
    return gpd.GeoDataFrame(
        {
            "id": np.array([], dtype=object),
            "patch_id": np.array([], dtype=object),
            "area_m2": np.array([], np.float64),
            "pixels": np.array([], np.int64),
            "mean_prob": np.array([], np.float64),
            "max_prob": np.array([], np.float64),
        },
        geometry=gpd.GeoSeries([], crs=crs),
        crs=crs,
    )


def to_wgs84(frames: Sequence[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """The rows of ``frames`` (each in its own CRS) in one EPSG:4326 table, in order.

    Empty frames are dropped; with no rows at all, :func:`empty_polygons`.
    """
    parts = [f.to_crs(4326) for f in frames if len(f)]
    if not parts:
        return empty_polygons()
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs="EPSG:4326")


def write_polygons(frame: gpd.GeoDataFrame, path: Path, layer: str) -> Path:
    """Write one GeoPackage layer atomically (an empty table keeps its columns and polygon type)."""
    with atomic_path(path) as tmp:
        frame.to_file(
            tmp, layer=layer, driver="GPKG", geometry_type="Polygon" if frame.empty else None
        )
    return path
