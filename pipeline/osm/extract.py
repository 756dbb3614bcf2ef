"""Read solar features from a local OSM extract (.osm, .osm.pbf, .osm.bz2) with pyosmium.

The file is streamed (``osmium.FileProcessor``), never loaded whole; node locations are kept
in osmium's index so ways get coordinates, and multipolygon relations go through osmium's own
area assembly (two passes over the file). Ways are turned into polygons here so that unclosed
ways are reported rather than skipped; relations that osmium cannot assemble (broken rings,
members missing from the extract) are reported with their id. Each feature keeps its object's
version and timestamp when the file carries them (``None`` when it does not).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import osmium
import shapely.wkb

from pipeline.errors import LabelsError
from pipeline.osm.features import OsmFeature, solar_kind, way_feature

log = logging.getLogger(__name__)

SUFFIXES = (".osm", ".osm.pbf", ".pbf", ".osm.bz2", ".osm.gz", ".o5m")


@dataclass(frozen=True)
class ExtractResult:
    """What an extract held.

    Attributes:
        features: Solar ways and relations (with geometry or a problem).
        header_bbox: ``(minlon, minlat, maxlon, maxlat)`` from the file header, if it has one.
        n_objects: Ways and relations with a ``power`` key that were looked at.
    """

    features: list[OsmFeature]
    header_bbox: tuple[float, float, float, float] | None
    n_objects: int


def header_bbox(path: Path) -> tuple[float, float, float, float] | None:
    """The bounding box in the file header (``<bounds>`` / PBF header), or ``None``."""
    reader = osmium.io.Reader(str(path), osmium.osm.osm_entity_bits.NOTHING)
    try:
        box = reader.header().box()
    finally:
        reader.close()
    if not box.valid():
        return None
    bl, tr = box.bottom_left, box.top_right
    if bl.lon >= tr.lon or bl.lat >= tr.lat:
        return None
    return (bl.lon, bl.lat, tr.lon, tr.lat)


def _check_path(path: Path) -> None:
    if not path.is_file():
        raise LabelsError(
            f"OSM extract {path} does not exist. Set labels.osm_file to an existing "
            ".osm/.osm.pbf/.osm.bz2 file (for the demo, run `make world` first)."
        )
    if not path.name.endswith(SUFFIXES):
        raise LabelsError(
            f"OSM extract {path} has an unknown suffix; pyosmium reads "
            f"{', '.join(SUFFIXES)}. Rename the file or convert it with `osmium cat`."
        )


def read_extract(path: str | Path) -> ExtractResult:
    """Stream an extract and return its solar ways and multipolygon relations.

    Args:
        path: ``.osm``, ``.osm.pbf`` or ``.osm.bz2`` file.

    Returns:
        The features (geometry in EPSG:4326) and the header box.

    Raises:
        LabelsError: the file is missing, has an unknown format, or osmium cannot parse it.
    """
    path = Path(path)
    _check_path(path)
    features: list[OsmFeature] = []
    relations: dict[int, dict[str, str]] = {}
    edits: dict[int, tuple[int | None, str | None]] = {}
    assembled: dict[int, OsmFeature] = {}
    seen = 0
    try:
        bbox = header_bbox(path)
        power = osmium.filter.KeyFilter("power")
        processor = osmium.FileProcessor(str(path)).with_areas(power).with_filter(power)
        for obj in processor:
            if isinstance(obj, osmium.osm.Area):
                if not obj.from_way():
                    area_tags = {t.k: t.v for t in obj.tags}
                    if solar_kind(area_tags) is not None:
                        assembled[obj.orig_id()] = with_edit(_area_feature(obj, area_tags), obj)
                continue
            if not isinstance(obj, osmium.osm.Way | osmium.osm.Relation):
                continue
            seen += 1
            tags = {t.k: t.v for t in obj.tags}
            if solar_kind(tags) is None:
                continue
            if isinstance(obj, osmium.osm.Way):
                features.append(with_edit(_way(obj, tags), obj))
            else:
                relations[obj.id] = tags
                edits[obj.id] = edit_of(obj)
    except RuntimeError as err:
        raise LabelsError(
            f"osmium could not read {path}: {err}. Check that the file is a complete OSM "
            "extract (re-download it or validate it with `osmium fileinfo -e`)."
        ) from err
    for rid, tags in relations.items():
        feature = assembled.get(rid)
        if feature is None:
            reason = (
                "multipolygon incomplete: not assembled (member ways missing from the "
                "extract, or the relation is not type=multipolygon)"
            )
            if tags.get("type") != "multipolygon":
                reason = f"relation type={tags.get('type')!r} is not a multipolygon"
            feature = OsmFeature("relation", rid, tags, None, reason, *edits[rid])
        features.append(feature)
    log.info("read %d solar features from %s", len(features), path)
    return ExtractResult(features, bbox, seen)


def edit_of(obj: osmium.osm.OSMObject) -> tuple[int | None, str | None]:
    """``(version, ISO 8601 UTC timestamp)`` of an object; ``None`` for what the file lacks
    (osmium reads a missing version as 0 and a missing timestamp as the epoch)."""
    version = int(obj.version) or None
    when = obj.timestamp
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    stamp = None if when <= datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC) else when
    return version, stamp.strftime("%Y-%m-%dT%H:%M:%SZ") if stamp is not None else None


def with_edit(feature: OsmFeature, obj: osmium.osm.OSMObject) -> OsmFeature:
    """``feature`` with ``obj``'s version and timestamp."""
    version, stamp = edit_of(obj)
    return replace(feature, version=version, timestamp=stamp)


def _way(obj: osmium.osm.Way, tags: dict[str, str]) -> OsmFeature:
    try:
        coords = [(n.lon, n.lat) for n in obj.nodes]
    except osmium.InvalidLocationError:
        return OsmFeature(
            "way", obj.id, tags, None, "way references nodes missing from the extract"
        )
    closed = len(obj.nodes) >= 2 and obj.nodes[0].ref == obj.nodes[-1].ref
    return way_feature(obj.id, tags, coords, closed)


_WKB = osmium.geom.WKBFactory()


def _area_feature(area: osmium.osm.Area, tags: dict[str, str]) -> OsmFeature:
    rid = area.orig_id()
    outer, _inner = area.num_rings()
    if outer == 0:
        return OsmFeature(
            "relation",
            rid,
            tags,
            None,
            "broken multipolygon: osmium could not assemble closed rings "
            "(unclosed or self-crossing ring)",
        )
    try:
        geom = shapely.wkb.loads(_WKB.create_multipolygon(area), hex=True)
    except RuntimeError as err:
        return OsmFeature("relation", rid, tags, None, f"broken multipolygon: {err}")
    return OsmFeature("relation", rid, tags, geom)
