"""One in-memory form for OSM solar features, whatever source they came from.

Both readers (pyosmium extracts, Overpass responses) produce :class:`OsmFeature` objects: an
OSM way or relation with its tags and a polygonal geometry in EPSG:4326 (lon/lat), or no
geometry and a ``problem`` saying why (unclosed ring, missing members, ...). Problem features
end up in ``rejected.gpkg``; nothing is dropped without a record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import shapely
from shapely.geometry import LineString, MultiLineString, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.ops import linemerge, unary_union

OsmType = Literal["way", "relation"]
Kind = Literal["plant", "generator"]

#: Tag combinations that make a way or relation a solar feature (the Overpass query asks
#: for exactly these; the file reader filters by the same rule).
SOLAR_RULES: tuple[tuple[str, str, str, str], ...] = (
    ("power", "plant", "plant:source", "solar"),
    ("power", "generator", "generator:source", "solar"),
    ("power", "generator", "generator:method", "photovoltaic"),
)


def solar_kind(tags: Mapping[str, str]) -> Kind | None:
    """``"plant"`` / ``"generator"`` when ``tags`` mark a solar feature, else ``None``."""
    for key, value, sub_key, sub_value in SOLAR_RULES:
        if tags.get(key) == value and tags.get(sub_key) == sub_value:
            return "plant" if value == "plant" else "generator"
    return None


@dataclass(frozen=True)
class OsmFeature:
    """An OSM solar way or relation.

    Attributes:
        osm_type: ``way`` or ``relation``.
        osm_id: The OSM id (positive for real data; any int in hand-made files).
        tags: All tags of the object.
        geometry: Polygon or MultiPolygon in EPSG:4326 (may be invalid; repaired later), or
            ``None`` when it could not be built.
        problem: Why ``geometry`` is missing or suspect (``None`` when fine).
        version: The object's OSM version, when the source has it (extracts with metadata).
        timestamp: Its last edit, ISO 8601 UTC (``2015-10-30T12:00:00Z``), when the source has it.
    """

    osm_type: OsmType
    osm_id: int
    tags: Mapping[str, str] = field(default_factory=dict)
    geometry: BaseGeometry | None = None
    problem: str | None = None
    version: int | None = None
    timestamp: str | None = None

    @property
    def farm_id(self) -> str:
        """``w123`` / ``r7``: the id the farms GeoPackage uses."""
        return f"{self.osm_type[0]}{self.osm_id}"

    @property
    def kind(self) -> Kind | None:
        return solar_kind(self.tags)


def way_feature(
    osm_id: int, tags: Mapping[str, str], coords: Sequence[tuple[float, float]], closed: bool
) -> OsmFeature:
    """A solar way as a polygon, or with a ``problem`` when its ring is unusable.

    Args:
        osm_id: Way id.
        tags: Its tags.
        coords: ``(lon, lat)`` per node, in way order.
        closed: True when the first and last node are the same node.
    """
    if not closed:
        return OsmFeature(
            "way",
            osm_id,
            dict(tags),
            None,
            f"unclosed ring: way has {len(coords)} nodes and does not end where it starts",
        )
    distinct = {tuple(c) for c in coords}
    if len(distinct) < 3:
        return OsmFeature(
            "way",
            osm_id,
            dict(tags),
            None,
            f"degenerate ring: only {len(distinct)} distinct node positions",
        )
    return OsmFeature("way", osm_id, dict(tags), Polygon(coords))


def assemble_rings(lines: Iterable[Sequence[tuple[float, float]]]) -> tuple[list[Polygon], int]:
    """Join way pieces end to end into closed rings.

    Args:
        lines: ``(lon, lat)`` coordinate lists of member ways (one role at a time).

    Returns:
        ``(polygons of the closed rings, number of pieces left unclosed)``.
    """
    pieces = [LineString(c) for c in lines if len(c) >= 2]
    if not pieces:
        return [], 0
    merged = linemerge(MultiLineString(pieces)) if len(pieces) > 1 else pieces[0]
    parts = list(merged.geoms) if hasattr(merged, "geoms") else [merged]
    rings: list[Polygon] = []
    broken = 0
    for line in parts:
        coords = list(line.coords)
        if len(coords) >= 4 and coords[0] == coords[-1]:
            rings.append(Polygon(coords))
        else:
            broken += 1
    return rings, broken


def relation_feature(
    osm_id: int,
    tags: Mapping[str, str],
    members: Iterable[tuple[str, Sequence[tuple[float, float]] | None]],
) -> OsmFeature:
    """A multipolygon relation from its member ways' geometries (Overpass ``out geom``).

    Args:
        osm_id: Relation id.
        tags: Its tags.
        members: ``(role, coords or None)`` per way member; ``None`` when the member's
            geometry is missing from the response.

    Returns:
        The feature; outer rings minus inner rings, or a ``problem`` when any ring is broken.
    """
    outer: list[Sequence[tuple[float, float]]] = []
    inner: list[Sequence[tuple[float, float]]] = []
    missing = 0
    for role, coords in members:
        if coords is None:
            missing += 1
            continue
        (inner if role == "inner" else outer).append(coords)
    if missing:
        return OsmFeature(
            "relation",
            osm_id,
            dict(tags),
            None,
            f"multipolygon incomplete: {missing} member way(s) without geometry",
        )
    outers, broken_out = assemble_rings(outer)
    inners, broken_in = assemble_rings(inner)
    if broken_out or broken_in:
        return OsmFeature(
            "relation",
            osm_id,
            dict(tags),
            None,
            f"broken multipolygon: {broken_out + broken_in} ring(s) do not close",
        )
    if not outers:
        return OsmFeature("relation", osm_id, dict(tags), None, "multipolygon without outer ring")
    shell = unary_union([shapely.make_valid(p) for p in outers])
    if inners:
        shell = shell.difference(unary_union([shapely.make_valid(p) for p in inners]))
    return OsmFeature("relation", osm_id, dict(tags), shell)
