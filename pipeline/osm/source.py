"""Where the solar features come from: a local OSM extract or the Overpass API.

:func:`read_solar_features` reads the configured source and returns the features with the AOI
to use (the extract's header box when none is configured) and facts for the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from pipeline.config.labels import LabelsConfig
from pipeline.errors import LabelsError
from pipeline.osm.extract import read_extract
from pipeline.osm.features import OsmFeature
from pipeline.osm.overpass import OverpassClient, build_query


@dataclass(frozen=True)
class SolarFeatures:
    """Solar features of the configured source.

    Attributes:
        features: Every solar feature found (EPSG:4326 geometries).
        aoi: The AOI to use (EPSG:4326), or ``None`` when neither configured nor in the source.
        info: Source facts for the manifest (``source``, file or URL, cache use, ...).
    """

    features: list[OsmFeature]
    aoi: BaseGeometry | None
    info: dict[str, object] = field(default_factory=dict)


def from_extract(path: Path, aoi: BaseGeometry | None) -> SolarFeatures:
    """Features of a local extract; without an AOI, the extract's header box (when it has one).

    Raises:
        LabelsError: the extract is unreadable.
    """
    result = read_extract(path)
    info: dict[str, object] = {
        "source": "file",
        "osm_file": str(path),
        "header_bbox": result.header_bbox,
    }
    if aoi is None and result.header_bbox is not None:
        aoi = box(*result.header_bbox)
        info["aoi_from"] = "extract header bbox"
    return SolarFeatures(result.features, aoi, info)


def from_overpass(lc: LabelsConfig, aoi: BaseGeometry, cache_dir: Path | None) -> SolarFeatures:
    """Features of the AOI's bounding box from the Overpass API (cached under ``cache_dir``).

    Raises:
        LabelsError: malformed Overpass response.
        FetchError: Overpass unreachable after retries.
    """
    client = OverpassClient(
        lc.overpass_url,
        timeout_s=lc.timeout_s,
        retries=lc.retries,
        backoff_s=lc.backoff_s,
        max_backoff_s=lc.max_backoff_s,
        cache_dir=cache_dir,
    )
    query = build_query(aoi.bounds, timeout_s=lc.timeout_s, fmt=lc.overpass_format)
    features, cached = client.fetch(query, lc.overpass_format)
    info: dict[str, object] = {
        "source": "overpass",
        "url": lc.overpass_url,
        "from_cache": cached,
        "format": lc.overpass_format,
    }
    return SolarFeatures(features, aoi, info)


def read_solar_features(
    lc: LabelsConfig, aoi: BaseGeometry | None, cache_dir: Path | None
) -> SolarFeatures:
    """Solar features from ``labels.source``.

    Args:
        lc: The ``labels`` section.
        aoi: The configured AOI (EPSG:4326) or ``None``.
        cache_dir: Folder of cached Overpass responses, or ``None`` for no cache.

    Raises:
        LabelsError: unreadable extract, malformed Overpass response, or a source without the
            setting it needs (the config schema normally guarantees it).
        FetchError: Overpass unreachable after retries.
    """
    if lc.source == "file":
        if lc.osm_file is None:
            raise LabelsError("labels.source is 'file' but labels.osm_file is not set; set it")
        return from_extract(lc.osm_file, aoi)
    if aoi is None:
        raise LabelsError(
            "labels.source is 'overpass' but no AOI is set; set labels.aoi_bbox or aoi_file"
        )
    return from_overpass(lc, aoi, cache_dir)
