"""CRS helpers: the UTM zone of a place, cached transformers, reprojection and areas in metres.

Labels, plans and masks meet in the UTM zone of each farm's or patch's centre (WGS 84 UTM,
EPSG 326zz north / 327zz south; the Norway/Svalbard zone exceptions are ignored). UTM's scale
error is below 0.1 % within a zone and about 0.1 % at 3° past a zone edge, far inside the 1 %
the labels need, so a geometry crossing a zone boundary is measured once in its centroid's
zone and reprojected into each patch's own zone when rasterized (:func:`to_epsg`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry.base import BaseGeometry

#: EPSG code of WGS 84 longitude/latitude, the CRS every vector artefact is stored in.
LONLAT_EPSG = 4326


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 UTM zone holding ``(lon, lat)`` (326zz north, 327zz south)."""
    zone = min(60, max(1, math.floor((lon + 180.0) / 6.0) + 1))
    return (32600 if lat >= 0 else 32700) + zone


@lru_cache(maxsize=64)
def transformer(src: int, dst: int) -> Transformer:
    """A cached ``always_xy`` transformer from EPSG ``src`` to EPSG ``dst``."""
    return Transformer.from_crs(src, dst, always_xy=True)


def to_epsg(
    geom: BaseGeometry, epsg: int, *, src: int = LONLAT_EPSG, max_segment_deg: float = 0.002
) -> BaseGeometry:
    """Reproject a geometry from EPSG ``src`` to EPSG ``epsg`` (densified so long edges bend).

    Args:
        geom: Geometry in ``src`` (EPSG:4326 by default), x before y.
        epsg: Target CRS (usually a UTM zone).
        src: Source EPSG.
        max_segment_deg: Edges longer than this (degrees) are split first; only applied when
            ``src`` is EPSG:4326 (pass 0 to keep the vertices as they are).

    Returns:
        The geometry in ``epsg``, x before y.
    """
    if src == LONLAT_EPSG and max_segment_deg > 0:
        geom = shapely.segmentize(geom, max_segment_deg)
    tr = transformer(src, epsg)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def to_local_utm(geom: BaseGeometry) -> tuple[BaseGeometry, int]:
    """A lon/lat geometry in the UTM zone of its centroid.

    Returns:
        ``(geometry in metres, that zone's EPSG code)``.
    """
    c = geom.centroid
    epsg = utm_epsg(c.x, c.y)
    return to_epsg(geom, epsg), epsg


def area_m2(geom: BaseGeometry) -> float:
    """Area in m² of a lon/lat geometry, measured in the UTM zone of its centroid."""
    if geom.is_empty:
        return 0.0
    return float(to_local_utm(geom)[0].area)
