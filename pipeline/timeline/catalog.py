"""A land-cover collection of the run's catalog (ESA WorldCover on Planetary Computer), read
through the same STAC search and band reader as Sentinel-2 (:mod:`pipeline.stac`).

:func:`collection_lookup` searches the collection once for the area; a catalog without it (the
demo world, Earth Search) answers ``None`` and the timeline falls back to spectral indices.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pystac
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from pipeline.errors import PipelineError
from pipeline.geo.crs import to_epsg
from pipeline.geo.masks import rasterize_mask
from pipeline.geo.plan import snap
from pipeline.geo.raster import Grid
from pipeline.net import RetryPolicy
from pipeline.stac.assets import Signer
from pipeline.stac.read import read_band
from pipeline.stac.scene import item_datetime
from pipeline.stac.source import ItemQuery, ItemSource
from pipeline.timeline.build import Lookup
from pipeline.timeline.landcover import LandCover, collection_cover

log = logging.getLogger(__name__)

#: Pixel size (m) a land-cover raster is read at (WorldCover's own).
LANDCOVER_GSD = 10.0


def class_asset(item: pystac.Item) -> pystac.Asset | None:
    """The class raster of a land-cover item: ``map`` (WorldCover), else the first GeoTIFF."""
    if "map" in item.assets:
        return item.assets["map"]
    return next((a for a in item.assets.values() if "tiff" in str(a.media_type or "")), None)


def footprint_grid(footprint: BaseGeometry, epsg: int, gsd: float = LANDCOVER_GSD) -> Grid:
    """A ``gsd`` grid covering ``footprint`` (in EPSG ``epsg``)."""
    minx, miny, maxx, maxy = footprint.bounds
    x0, y0 = snap(minx, gsd), snap(maxy, gsd, up=True)
    width = max(1, int(-(-(maxx - x0) // gsd)))
    height = max(1, int(-(-(y0 - miny) // gsd)))
    return Grid(CRS.from_epsg(epsg), Affine(gsd, 0.0, x0, 0.0, -gsd, y0), height, width)


def collection_lookup(
    source: ItemSource,
    collection: str,
    area: BaseGeometry,
    signer: Signer,
    policy: RetryPolicy,
    gdal: Mapping[str, str | int],
) -> Lookup | None:
    """A :data:`~pipeline.timeline.build.Lookup` reading ``collection``, or ``None`` when the
    catalog has no item of it over ``area`` (EPSG:4326) or cannot be searched for it."""
    try:
        items = source.search(ItemQuery(area, collection, None, 100.0, 100))
    except PipelineError as err:
        log.info("timeline: no land-cover collection %s (%s); spectral indices", collection, err)
        return None
    items = sorted(items, key=lambda it: (item_datetime(it), it.id), reverse=True)  # newest
    items = [it for it in items if it.geometry is not None and class_asset(it) is not None]
    if not items:
        log.info("timeline: the catalog has no %s item over the area", collection)
        return None

    def lookup(footprint: BaseGeometry, epsg: int) -> LandCover | None:
        lonlat = to_epsg(footprint, 4326, src=epsg, max_segment_deg=0)
        grid = footprint_grid(footprint, epsg)
        inside = rasterize_mask([footprint], grid) > 0
        for item in items:
            if not shape(item.geometry).intersects(lonlat):
                continue
            asset = class_asset(item)
            href = signer((asset.get_absolute_href() or asset.href) if asset else "")
            codes = read_band(
                href,
                grid,
                resampling=Resampling.nearest,
                dtype="uint8",
                policy=policy,
                options=gdal,
                what=f"read land cover {item.id}",
            )
            found = collection_cover(codes, inside, f"{collection} {item.id}")
            if found is not None:
                return found
        return None

    return lookup
