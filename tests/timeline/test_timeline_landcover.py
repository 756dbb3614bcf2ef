"""The replaced land from a land-cover collection of a real static STAC catalog (a WorldCover
style class COG), and the fallback when the catalog has no such collection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pystac
import pytest
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import box

from pipeline.geo.crs import to_epsg
from pipeline.geo.raster import Grid, write_cog
from pipeline.net import RetryPolicy
from pipeline.stac.source import StaticCatalogSource
from pipeline.timeline.catalog import collection_lookup

LON0, LAT0, STEP = -75.70, 37.70, 0.0001  # a 0.02 x 0.02 degree class raster
N = 200


def _catalog(root: Path) -> Path:
    codes = np.full((N, N), 10, np.uint8)  # tree cover ...
    codes[:, N // 2 :] = 40  # ... and cropland in the east half
    grid = Grid(CRS.from_epsg(4326), Affine(STEP, 0, LON0, 0, -STEP, LAT0), N, N)
    cog = write_cog(root / "wc" / "map.tif", codes[None], grid, band_names=["map"], nodata=0)
    catalog = pystac.Catalog(id="lc", description="land cover")
    collection = pystac.Collection(
        id="esa-worldcover",
        description="test",
        extent=pystac.Extent(
            pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])
        ),
    )
    catalog.add_child(collection)
    footprint = box(LON0, LAT0 - N * STEP, LON0 + N * STEP, LAT0)
    item = pystac.Item(
        id="ESA_WorldCover_10m_2021_v200_N36W076",
        geometry=footprint.__geo_interface__,
        bbox=list(footprint.bounds),
        datetime=pystac.utils.str_to_datetime("2021-01-01T00:00:00Z"),
        properties={},
    )
    item.add_asset("map", pystac.Asset(str(cog.resolve()), media_type=pystac.MediaType.COG))
    collection.add_item(item)
    catalog.normalize_hrefs(str((root / "stac").resolve()) + "/")
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "stac" / "catalog.json"


def test_land_cover_comes_from_the_collection_where_the_catalog_has_one(tmp_path: Path) -> None:
    source = StaticCatalogSource(str(_catalog(tmp_path)))
    area = box(LON0, LAT0 - N * STEP, LON0 + N * STEP, LAT0)
    lookup = collection_lookup(
        source, "esa-worldcover", area, lambda href: href, RetryPolicy(0, 0.01), {}
    )
    assert lookup is not None
    # a farm mostly in the east (cropland) half
    farm = box(LON0 + 0.008, LAT0 - 0.012, LON0 + 0.016, LAT0 - 0.006)
    epsg = 32618
    cover = lookup(to_epsg(farm, epsg, max_segment_deg=0), epsg)
    assert cover is not None
    assert cover.land_cover == "cropland"
    assert cover.share == pytest.approx(0.75, abs=0.05)
    assert cover.source == "esa-worldcover ESA_WorldCover_10m_2021_v200_N36W076"
    outside = box(LON0 + 1, LAT0 + 1, LON0 + 1.01, LAT0 + 1.01)  # no item there
    assert lookup(to_epsg(outside, epsg, max_segment_deg=0), epsg) is None


def test_no_collection_in_the_catalog_means_the_spectral_fallback(tmp_path: Path) -> None:
    source = StaticCatalogSource(str(_catalog(tmp_path)))
    area = box(LON0, LAT0 - N * STEP, LON0 + N * STEP, LAT0)
    policy = RetryPolicy(0, 0.01)
    assert collection_lookup(source, "io-lulc", area, lambda h: h, policy, {}) is None
    far = box(10, 10, 11, 11)
    assert collection_lookup(source, "esa-worldcover", far, lambda h: h, policy, {}) is None
