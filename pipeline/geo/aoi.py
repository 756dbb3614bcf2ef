"""Areas of interest: a bounding box in any CRS or a vector file, as one EPSG:4326 polygon."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from pipeline.errors import LabelsError


def _empty(where: str) -> LabelsError:
    return LabelsError(
        f"the AOI from {where} is empty (no area). Give a polygon or a bounding box "
        "[minx, miny, maxx, maxy] with minx < maxx and miny < maxy in labels.aoi_bbox/aoi_crs, "
        "or a GeoJSON/GeoPackage with at least one polygon in labels.aoi_file."
    )


def aoi_from_bbox(bbox: tuple[float, float, float, float], crs: str) -> BaseGeometry:
    """The bbox as an EPSG:4326 polygon (edges densified before reprojection).

    Raises:
        LabelsError: the CRS is unknown or the box has no area.
    """
    try:
        src = CRS.from_user_input(crs)
    except CRSError as err:
        raise LabelsError(
            f"labels.aoi_crs {crs!r} is not a CRS pyproj knows ({err}); use e.g. EPSG:4326"
        ) from err
    geom = box(*bbox)
    if geom.is_empty or geom.area <= 0:
        raise _empty(f"labels.aoi_bbox {list(bbox)}")
    if src.to_epsg() != 4326:
        geom = shapely.segmentize(geom, max(geom.length / 400, 1e-9))
        geom = shape(transform_geom(src.to_wkt(), "EPSG:4326", mapping(geom)))
    return geom


def aoi_from_file(path: str | Path) -> BaseGeometry:
    """Union of the polygons in a GeoJSON/GeoPackage, in EPSG:4326.

    Raises:
        LabelsError: the file is missing or unreadable, has no CRS, or holds no area.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelsError(
            f"labels.aoi_file {path} does not exist; point it at a GeoJSON or "
            "GeoPackage polygon (or use labels.aoi_bbox)"
        )
    try:
        gdf = gpd.read_file(path)
    except Exception as err:  # pyogrio raises several unrelated types
        raise LabelsError(
            f"labels.aoi_file {path} cannot be read as a vector file ({err}); "
            "write it as GeoJSON or GeoPackage"
        ) from err
    if gdf.crs is None:
        raise LabelsError(
            f"labels.aoi_file {path} declares no CRS; save it with one "
            "(GeoJSON is EPSG:4326 by definition)"
        )
    geoms = gdf.to_crs(4326).geometry
    geom = shapely.union_all([g for g in geoms if g is not None and not g.is_empty])
    if geom.is_empty or geom.area <= 0:
        raise _empty(f"labels.aoi_file {path}")
    return geom
