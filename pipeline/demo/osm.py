"""The demo world's OpenStreetMap file: solar farms tagged as mappers tag them.

Farms are closed ways tagged ``power=plant`` + ``plant:source=solar``; one is a
``type=multipolygon`` relation with an outer and an inner (hole) way; a few carry
``power=generator`` sub-array ways inside the plant; one is drawn only as generators; one tiny
rooftop generator is below any sensible minimum area. Ids are positive and sequential; an
object has version 1 and a fixed timestamp unless the world gives it its own edit (a world with
a history, label errors: :mod:`pipeline.demo.label_errors`), and the file is byte-for-byte
reproducible. Extra sites (ghost labels, a removed farm) are drawn after the rooftop, and
unmapped farms are dropped after drawing, so every other farm keeps its id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import osmium
from pyproj import Transformer
from shapely.geometry import Polygon

from pipeline.demo.layout import FarmPlan
from pipeline.demo.shapes import split_in_two
from pipeline.io import atomic_path

TIMESTAMP: Final[datetime] = datetime(2016, 1, 1, tzinfo=UTC)
PLANT_TAGS: Final[dict[str, str]] = {
    "power": "plant",
    "plant:source": "solar",
    "plant:method": "photovoltaic",
    "plant:output:electricity": "yes",
}
GENERATOR_TAGS: Final[dict[str, str]] = {
    "power": "generator",
    "generator:source": "solar",
    "generator:method": "photovoltaic",
    "generator:type": "solar_photovoltaic_panel",
    "generator:output:electricity": "yes",
}
#: Generator sub-arrays are drawn this far inside their plant's outline (metres).
GENERATOR_INSET_M: Final[float] = 6.0
FIRST_NODE_ID: Final[int] = 1
FIRST_WAY_ID: Final[int] = 1000
FIRST_RELATION_ID: Final[int] = 1


@dataclass
class OsmDraft:
    """OSM objects under construction: node locations, ways and relations, in id order."""

    nodes: list[tuple[int, float, float]] = field(default_factory=list)
    ways: list[tuple[int, list[int], dict[str, str]]] = field(default_factory=list)
    relations: list[tuple[int, list[tuple[str, int, str]], dict[str, str]]] = field(
        default_factory=list
    )
    #: ``("n"|"w"|"r", id)`` -> ``(version, timestamp)`` where an object has its own edit.
    edits: dict[tuple[str, int], tuple[int, datetime]] = field(default_factory=dict)

    def add_ring(self, coords: np.ndarray, tags: dict[str, str]) -> int:
        """Add a closed way through ``coords`` ((n, 2) lon/lat, first != last); its id."""
        first = FIRST_NODE_ID + len(self.nodes)
        ids = [first + i for i in range(len(coords))]
        self.nodes.extend((i, float(x), float(y)) for i, (x, y) in zip(ids, coords, strict=True))
        way_id = FIRST_WAY_ID + len(self.ways)
        self.ways.append((way_id, [*ids, ids[0]], dict(tags)))
        return way_id

    def add_relation(self, members: list[tuple[str, int, str]], tags: dict[str, str]) -> int:
        rel_id = FIRST_RELATION_ID + len(self.relations)
        self.relations.append((rel_id, members, dict(tags)))
        return rel_id

    def set_edit(self, kind: str, osm_id: int, version: int, when: datetime) -> None:
        """Give object ``kind`` (``w``/``r``) ``osm_id`` its own version and timestamp; a way's
        nodes take the timestamp at version 1 (they were drawn with it)."""
        self.edits[(kind, osm_id)] = (version, when)
        if kind == "w":
            refs = next(r for i, r, _ in self.ways if i == osm_id)
            for node in refs:
                self.edits[("n", node)] = (1, when)

    def drop_ways(self, way_ids: set[int]) -> None:
        """Remove ways ``way_ids`` and the nodes only they use."""
        dropped = {n for i, refs, _ in self.ways if i in way_ids for n in refs}
        self.ways = [w for w in self.ways if w[0] not in way_ids]
        kept = {n for _, refs, _ in self.ways for n in refs}
        self.nodes = [n for n in self.nodes if n[0] not in dropped or n[0] in kept]

    def edit_of(self, kind: str, osm_id: int) -> tuple[int, datetime]:
        """``(version, timestamp)`` of an object: its own edit or version 1 at
        :data:`TIMESTAMP`."""
        return self.edits.get((kind, osm_id), (1, TIMESTAMP))


@dataclass(frozen=True)
class OsmFarm:
    """How one planted farm appears in OSM: its farm id (``w<id>``/``r<id>``) and all ids."""

    farm_index: int
    farm_id: str
    way_ids: tuple[int, ...]
    relation_id: int | None
    generator_ids: tuple[int, ...]


def _ring_lonlat(coords: Sequence[tuple[float, float]], to_ll: Transformer) -> np.ndarray:
    xy = np.asarray(coords)[:-1]
    lon, lat = to_ll.transform(xy[:, 0], xy[:, 1])
    return np.round(np.column_stack([lon, lat]), 7)


def draw_farms(
    farms: Sequence[FarmPlan], rooftop: Polygon | None, rng: np.random.Generator, epsg: int
) -> tuple[OsmDraft, list[OsmFarm], int | None]:
    """Turn planted farms (EPSG:``epsg``) into OSM objects.

    Returns:
        The draft, one :class:`OsmFarm` per farm, and the rooftop generator's way id.
    """
    to_ll = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
    draft = OsmDraft()
    out: list[OsmFarm] = []
    for farm in farms:
        name = {"name": f"Demo Solar {farm.index + 1:02d}", "operator": "Demo Energy"}
        geom = farm.geometry
        if farm.role == "plant_relation":
            outer = draft.add_ring(_ring_lonlat(geom.exterior.coords, to_ll), {})
            inners = [draft.add_ring(_ring_lonlat(r.coords, to_ll), {}) for r in geom.interiors]
            rel = draft.add_relation(
                [("w", outer, "outer"), *(("w", i, "inner") for i in inners)],
                {"type": "multipolygon", **PLANT_TAGS, **name},
            )
            out.append(OsmFarm(farm.index, f"r{rel}", (outer, *inners), rel, ()))
        elif farm.role == "generators_only":
            gens = tuple(
                draft.add_ring(_ring_lonlat(p.exterior.coords, to_ll), GENERATOR_TAGS)
                for p in split_in_two(geom, rng)
            )
            out.append(OsmFarm(farm.index, f"w{gens[0]}", gens, None, gens))
        else:
            plant = draft.add_ring(
                _ring_lonlat(geom.exterior.coords, to_ll), {**PLANT_TAGS, **name}
            )
            gens = ()
            if farm.role == "plant_with_generators":
                inset = geom.buffer(-GENERATOR_INSET_M)
                inset = inset if inset.geom_type == "Polygon" else geom
                gens = tuple(
                    draft.add_ring(_ring_lonlat(p.exterior.coords, to_ll), GENERATOR_TAGS)
                    for p in split_in_two(inset, rng)
                )
            out.append(OsmFarm(farm.index, f"w{plant}", (plant, *gens), None, gens))
    roof = None
    if rooftop is not None:
        roof = draft.add_ring(
            _ring_lonlat(rooftop.exterior.coords, to_ll),
            {**GENERATOR_TAGS, "location": "roof", "generator:place": "roof"},
        )
    return draft, out, roof


def draw_sites(
    draft: OsmDraft, sites: Sequence[tuple[Polygon, dict[str, str]]], epsg: int
) -> list[int]:
    """Add each ``(outline (EPSG:``epsg``), tags)`` site as a closed way; their ids."""
    to_ll = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
    return [draft.add_ring(_ring_lonlat(g.exterior.coords, to_ll), tags) for g, tags in sites]


def write_osm(path: Path, draft: OsmDraft, bbox_lonlat: tuple[float, float, float, float]) -> Path:
    """Write ``draft`` as OSM PBF (atomically), header bbox ``(west, south, east, north)``."""
    header = osmium.io.Header()
    header.set("generator", "solarfarm-pipeline demo world")
    west, south, east, north = bbox_lonlat
    header.add_box(
        osmium.osm.Box(osmium.osm.Location(west, south), osmium.osm.Location(east, north))
    )
    common: dict[str, Any] = {"changeset": 1, "uid": 1, "user": "demo-world", "visible": True}

    def meta(kind: str, osm_id: int) -> dict[str, Any]:
        version, when = draft.edit_of(kind, osm_id)
        return {"id": osm_id, "version": version, "timestamp": when, **common}

    with atomic_path(path) as tmp:
        writer = osmium.SimpleWriter(osmium.io.File(str(tmp), "pbf"), header=header)
        try:
            for node_id, lon, lat in draft.nodes:
                writer.add_node(
                    osmium.osm.mutable.Node(location=(lon, lat), tags={}, **meta("n", node_id))
                )
            for way_id, refs, tags in draft.ways:
                writer.add_way(osmium.osm.mutable.Way(nodes=refs, tags=tags, **meta("w", way_id)))
            for rel_id, members, tags in draft.relations:
                writer.add_relation(
                    osmium.osm.mutable.Relation(members=members, tags=tags, **meta("r", rel_id))
                )
        finally:
            writer.close()
    return path
