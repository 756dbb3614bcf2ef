"""Farm sites over time: the footprints whose history the windows' stacked mosaics tell.

Every farm of the latest window is a site (same id); its footprint is its outline joined with
the outlines of earlier windows' farms lying mostly inside it (:data:`JOIN_SHARE`: its earlier
phases), so every window is measured on the same pixels. The rest of the earlier farms, minus
the latest farms (removed farms, farms the latest window missed, fields mapped around a farm),
become sites of their own, ``e0001``... by centroid. :func:`footprint_pixels` reads one
window's mosaic inside a site.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from pipeline.geo.crs import utm_epsg
from pipeline.geo.masks import rasterize_mask
from pipeline.geo.raster import Grid

#: An earlier farm joins a latest farm's site when at least this share of it lies inside that
#: farm (an earlier phase of it); one that only touches it (a field mapped around it in
#: summer) keeps its own site, minus the latest farms.
JOIN_SHARE = 0.5


@dataclass(frozen=True)
class Site:
    """One farm site.

    Attributes:
        site_id: The latest window's farm id, or ``e0001``... for a site it does not map.
        farm_id: The latest window's farm (``""`` for an ``e`` site).
        epsg: The UTM zone it is measured in.
        geometry: Its footprint (EPSG:4326).
    """

    site_id: str
    farm_id: str
    epsg: int
    geometry: BaseGeometry


def _zone(geom: BaseGeometry, zones: str) -> int:
    """The zone of a farm row: its centroid's when listed in ``zones`` (``"32617;32618"``)."""
    listed = [int(z) for z in str(zones).split(";") if z]
    c = geom.centroid
    own = utm_epsg(c.x, c.y)
    return own if own in listed or not listed else listed[0]


def _inside_share(geom: BaseGeometry, other: BaseGeometry) -> float:
    """Share of ``geom``'s area inside ``other``."""
    return shapely.intersection(geom, other).area / geom.area if geom.area > 0 else 0.0


def _ordered(geoms: Sequence[BaseGeometry]) -> list[BaseGeometry]:
    return sorted(geoms, key=lambda g: (round(g.centroid.x, 7), round(g.centroid.y, 7)))


def build_sites(latest: gpd.GeoDataFrame, earlier: Sequence[gpd.GeoDataFrame]) -> list[Site]:
    """The sites of the latest window's farms and of earlier farms meeting none of them.

    Args:
        latest: The latest window's ``farms.gpkg`` (EPSG:4326, ``farm_id``, ``epsg``).
        earlier: The earlier windows' ``farms.gpkg`` frames (any may be empty).
    """
    before = [g for frame in earlier if len(frame) for g in frame.to_crs(4326).geometry]
    tree = shapely.STRtree(before) if before else None
    used: set[int] = set()
    sites = []
    for row in latest.to_crs(4326).itertuples():
        near = [int(i) for i in tree.query(row.geometry, predicate="intersects")] if tree else []
        hits = [i for i in near if _inside_share(before[i], row.geometry) >= JOIN_SHARE]
        used.update(hits)
        geom = unary_union([row.geometry, *(before[i] for i in hits)])
        sites.append(Site(str(row.farm_id), str(row.farm_id), _zone(row.geometry, row.epsg), geom))
    taken = unary_union([s.geometry for s in sites]) if sites else None
    rest = unary_union([g for i, g in enumerate(before) if i not in used])
    rest = rest.difference(taken) if taken is not None and not rest.is_empty else rest
    parts = [] if rest.is_empty else list(getattr(rest, "geoms", [rest]))
    parts = [g for g in parts if g.geom_type in ("Polygon", "MultiPolygon") and g.area > 0]
    for k, geom in enumerate(_ordered(parts), start=1):
        c = geom.centroid
        sites.append(Site(f"e{k:04d}", "", utm_epsg(c.x, c.y), geom))
    return sites


def footprint_pixels(path: Path, footprint: BaseGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``(probability, inside)`` of a window's mosaic around ``footprint`` (in its CRS).

    A missing mosaic (a window or zone without any mapped chunk) reads as all NaN: unseen.

    Returns:
        ``(H, W)`` float32 probability (NaN where unmapped) and ``(H, W)`` bool footprint
        (pixel-centre rule).
    """
    if not path.is_file():
        return np.full((1, 1), np.nan, np.float32), np.ones((1, 1), bool)
    with rasterio.open(path) as src:
        t = src.transform
        minx, miny, maxx, maxy = footprint.bounds
        col0, row0 = math.floor((minx - t.c) / t.a), math.floor((t.f - maxy) / -t.e)
        col1, row1 = math.ceil((maxx - t.c) / t.a), math.ceil((t.f - miny) / -t.e)
        window = Window(col0, row0, max(col1 - col0, 1), max(row1 - row0, 1))
        prob = src.read(1, window=window, boundless=True, fill_value=np.nan).astype(np.float32)
        grid = Grid(src.crs, src.window_transform(window), prob.shape[0], prob.shape[1])
    return prob, rasterize_mask([footprint], grid) > 0
