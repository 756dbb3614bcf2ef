"""Hand-written OSM test data: one feature set written as OSM XML and as Overpass JSON/XML,
and the fixtures of the OSM and labels tests (an .osm file, run configs).

Shapes are drawn in UTM metres (so their areas are known exactly) and stored as lon/lat.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import pytest
from pyproj import Transformer

from pipeline.config import RunConfig

PLANT = {"power": "plant", "plant:source": "solar"}
GENERATOR = {"power": "generator", "generator:source": "solar"}
PV_GENERATOR = {"power": "generator", "generator:method": "photovoltaic"}


def rect(x: float, y: float, w: float, h: float) -> list[tuple[float, float]]:
    """Closed rectangle ring (lower-left x, y; width, height) in metres."""
    return [(x, y), (x + w, y), (x + w, y + h), (x, y + h), (x, y)]


@dataclass
class Way:
    wid: int
    nodes: list[int]
    tags: dict[str, str]


@dataclass
class Relation:
    rid: int
    members: list[tuple[int, str]]
    tags: dict[str, str]


@dataclass
class OsmBuilder:
    """Collects nodes/ways/relations; coordinates given in ``epsg`` metres or lon/lat."""

    epsg: int = 32618
    nodes: dict[int, tuple[float, float]] = field(default_factory=dict)
    ways: list[Way] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    _next: int = 1

    def lonlat(self, x: float, y: float) -> tuple[float, float]:
        if self.epsg == 4326:
            return (x, y)
        tr = Transformer.from_crs(self.epsg, 4326, always_xy=True)
        lon, lat = tr.transform(x, y)
        return (round(lon, 7), round(lat, 7))

    def node(self, x: float, y: float) -> int:
        nid = self._next
        self._next += 1
        self.nodes[nid] = self.lonlat(x, y)
        return nid

    def way(
        self,
        wid: int,
        coords: list[tuple[float, float]],
        tags: dict[str, str] | None = None,
        *,
        close: bool = True,
        repeat: int | None = None,
    ) -> None:
        """A way through ``coords``; a closed ring reuses its first node at the end.

        ``repeat=k`` references the k-th node twice in a row (a duplicate node).
        """
        ring = coords[:-1] if close and coords[0] == coords[-1] else coords
        ids = [self.node(x, y) for x, y in ring]
        if repeat is not None:
            ids.insert(repeat, ids[repeat])
        if close:
            ids.append(ids[0])
        self.ways.append(Way(wid, ids, dict(tags or {})))

    def relation(self, rid: int, members: list[tuple[int, str]], tags: dict[str, str]) -> None:
        self.relations.append(Relation(rid, members, {"type": "multipolygon", **tags}))

    # writers -------------------------------------------------------------------------------
    def bounds(self) -> tuple[float, float, float, float]:
        lons = [c[0] for c in self.nodes.values()]
        lats = [c[1] for c in self.nodes.values()]
        return (min(lons), min(lats), max(lons), max(lats))

    def write_osm(
        self, path: Path, bounds: tuple[float, float, float, float] | None = None
    ) -> Path:
        lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<osm version="0.6" generator="tests">']
        if bounds is not None:
            lines.append(
                f'<bounds minlon="{bounds[0]}" minlat="{bounds[1]}" '
                f'maxlon="{bounds[2]}" maxlat="{bounds[3]}"/>'
            )
        for nid, (lon, lat) in sorted(self.nodes.items()):
            lines.append(f'<node id="{nid}" version="1" lat="{lat}" lon="{lon}"/>')
        for w in self.ways:
            lines.append(f'<way id="{w.wid}" version="1">')
            lines += [f'  <nd ref="{n}"/>' for n in w.nodes]
            lines += [f"  <tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in w.tags.items()]
            lines.append("</way>")
        for r in self.relations:
            lines.append(f'<relation id="{r.rid}" version="1">')
            lines += [f'  <member type="way" ref="{m}" role="{role}"/>' for m, role in r.members]
            lines += [f"  <tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in r.tags.items()]
            lines.append("</relation>")
        lines.append("</osm>")
        path.write_text("\n".join(lines) + "\n")
        return path

    def _solar(self, tags: dict[str, str]) -> bool:
        return tags.get("power") in ("plant", "generator")

    def _geom(self, w: Way) -> list[dict[str, float]]:
        return [{"lat": self.nodes[n][1], "lon": self.nodes[n][0]} for n in w.nodes]

    def overpass_json(self) -> str:
        """What Overpass answers to the solar query with ``[out:json]`` and ``out geom``."""
        ways = {w.wid: w for w in self.ways}
        elements: list[dict[str, object]] = []
        for w in self.ways:
            if self._solar(w.tags):
                elements.append(
                    {
                        "type": "way",
                        "id": w.wid,
                        "nodes": w.nodes,
                        "geometry": self._geom(w),
                        "tags": w.tags,
                    }
                )
        for r in self.relations:
            members = [
                {"type": "way", "ref": m, "role": role, "geometry": self._geom(ways[m])}
                for m, role in r.members
            ]
            elements.append({"type": "relation", "id": r.rid, "members": members, "tags": r.tags})
        return json.dumps(
            {
                "version": 0.6,
                "generator": "Overpass API 0.7.62",
                "osm3s": {"timestamp_osm_base": "2024-01-01T00:00:00Z"},
                "elements": elements,
            }
        )

    def overpass_xml(self) -> str:
        """The same answer with ``[out:xml]``."""
        ways = {w.wid: w for w in self.ways}
        lines = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<osm version="0.6" generator="Overpass API 0.7.62">',
            "<note>The data included in this document is from www.openstreetmap.org.</note>",
        ]
        for w in self.ways:
            if not self._solar(w.tags):
                continue
            lines.append(f'  <way id="{w.wid}">')
            lines += [
                f'    <nd ref="{n}" lat="{self.nodes[n][1]}" lon="{self.nodes[n][0]}"/>'
                for n in w.nodes
            ]
            lines += [f"    <tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in w.tags.items()]
            lines.append("  </way>")
        for r in self.relations:
            lines.append(f'  <relation id="{r.rid}">')
            for m, role in r.members:
                lines.append(f'    <member type="way" ref="{m}" role="{role}">')
                lines += [
                    f'      <nd lat="{self.nodes[n][1]}" lon="{self.nodes[n][0]}"/>'
                    for n in ways[m].nodes
                ]
                lines.append("    </member>")
            lines += [f"    <tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in r.tags.items()]
            lines.append("  </relation>")
        lines.append("</osm>")
        return "\n".join(lines) + "\n"


X0, Y0 = 430_000.0, 4_150_000.0  # UTM 18N, Virginia's Eastern Shore (the demo scene's zone)

#: Expected accepted farms: farm_id -> (area m², generators merged).
EXPECTED = {
    "w100": (120_000.0, 2),  # plant 400 x 300 with two generators inside
    "r200": (80_000.0, 0),  # 300 x 300 outer minus 100 x 100 hole
    "w400": (40_000.0, 0),  # 200 x 200 with a duplicate node
    "w500": (8_000.0, 4),  # five 200 x 8 panel rows 2 m apart -> one farm
    "w700": (20_000.0, 0),  # bow-tie plant, repaired by make_valid into two triangles
    "w800": (3_000_000.0, 0),  # 3000 x 1000 plant: cut by patch edges
}
#: Expected rejections: (osm_type, osm_id) -> reason prefix.
REJECTED = {
    ("way", 300): "unclosed ring",
    ("relation", 310): "broken multipolygon",
    ("way", 600): "area",
}


def demo_features() -> OsmBuilder:
    """The hand-written feature set (see :data:`EXPECTED`, :data:`REJECTED`)."""
    b = OsmBuilder()
    b.way(100, rect(X0, Y0, 400, 300), PLANT)
    b.way(110, rect(X0 + 50, Y0 + 50, 50, 50), GENERATOR)
    b.way(111, rect(X0 + 200, Y0 + 100, 50, 50), PV_GENERATOR)
    b.way(201, rect(X0 + 1000, Y0, 300, 300))
    b.way(202, rect(X0 + 1100, Y0 + 100, 100, 100))
    b.relation(200, [(201, "outer"), (202, "inner")], PLANT)
    b.way(300, rect(X0 + 2000, Y0, 200, 200)[:-1], PLANT, close=False)  # unclosed
    b.way(311, [(X0 + 2500, Y0), (X0 + 2700, Y0), (X0 + 2700, Y0 + 200)], close=False)
    b.way(312, [(X0 + 2690, Y0 + 210), (X0 + 2500, Y0 + 200), (X0 + 2500, Y0 + 10)], close=False)
    b.relation(310, [(311, "outer"), (312, "outer")], PLANT)  # ring does not close
    b.way(400, rect(X0 + 3000, Y0, 200, 200), PLANT, repeat=2)  # duplicate node
    for k in range(5):
        b.way(500 + k, rect(X0, Y0 + 1000 + 10 * k, 200, 8), GENERATOR)
    b.way(600, rect(X0 + 1000, Y0 + 1000, 20, 20), GENERATOR)  # rooftop
    b.way(
        700,
        [
            (X0 + 2000, Y0 + 1000),
            (X0 + 2200, Y0 + 1200),
            (X0 + 2200, Y0 + 1000),
            (X0 + 2000, Y0 + 1200),
            (X0 + 2000, Y0 + 1000),
        ],
        PLANT,
    )  # bow-tie
    b.way(800, rect(X0 - 500, Y0 + 3000, 3000, 1000), PLANT)
    return b


def zone_crossing_features() -> OsmBuilder:
    """A plant spanning 72°W (UTM zones 18/19), drawn in lon/lat, plus one more farm."""
    b = OsmBuilder(epsg=4326)
    b.way(
        900,
        [
            (-72.006, 40.000),
            (-71.994, 40.000),
            (-71.994, 40.004),
            (-72.006, 40.004),
            (-72.006, 40.000),
        ],
        PLANT,
    )
    b.way(
        901,
        [(-72.1, 40.0), (-72.097, 40.0), (-72.097, 40.002), (-72.1, 40.002), (-72.1, 40.0)],
        PLANT,
    )
    return b


@pytest.fixture
def demo_osm(tmp_path: Path) -> tuple[OsmBuilder, Path]:
    """The hand-written feature set as an .osm file whose header box pads the features."""
    b = demo_features()
    minx, miny, maxx, maxy = b.bounds()
    return b, b.write_osm(
        tmp_path / "demo.osm", (minx - 0.05, miny - 0.05, maxx + 0.05, maxy + 0.05)
    )


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., RunConfig]:
    """A RunConfig under ``tmp_path/data`` with ``labels`` overrides."""

    def _make(seed: int = 0, tiles: dict[str, Any] | None = None, **labels: Any) -> RunConfig:
        return RunConfig.model_validate(
            {
                "run": {"name": "t", "seed": seed, "data_root": str(tmp_path / "data")},
                "labels": {"negative_buffer_m": 300, **labels},
                "fetch": {"catalog": "unused"},
                "tiles": tiles or {"block_size_m": 2560},
            }
        )

    return _make
