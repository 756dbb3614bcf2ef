"""Mapped farms: chunk pieces merged across chunk seams and zone edges, then matched to labels.

Pieces of one zone lie on one pixel lattice, so pieces of neighbouring chunks that belong to one
4-connected component share exact pixel edges: they are joined (union-find) when their
intersection has length, and unioned. Pieces of neighbouring zones are joined when they lie
within one pixel of each other (each zone maps only its own side of the meridian, so such pieces
face each other across it); their union is closed by half a pixel in the larger part's zone to
bridge the step along the zone edge. Statistics merge exactly from the pieces' sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import geopandas as gpd
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from pipeline.mapping.pieces import Piece
from pipeline.mapping.provenance import Acquisition
from pipeline.osm.geometry import to_epsg

#: Columns of ``farms.gpkg`` (besides ``geometry``).
COLUMNS = (
    "farm_id",
    "area_ha",
    "mean_prob",
    "max_prob",
    "pixels",
    "acquisitions",
    "dates",
    "epsg",
    "in_osm",
    "osm_id",
    "label_farm_id",
    "label_iou",
)


@dataclass(frozen=True)
class FarmRules:
    """How pieces become mapped farms.

    Attributes:
        gsd: Pixel size in metres.
        min_area_m2: Smaller farms are dropped.
        match_iou: ``in_osm`` from this IoU with a label farm.
    """

    gsd: float
    min_area_m2: float
    match_iou: float


class _Groups:
    """Union-find over piece positions (smallest position is the root)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return sorted(out.values())


def _join_seams(pieces: Sequence[Piece], groups: _Groups) -> None:
    """Join pieces of one zone whose outlines share an edge (not just a corner)."""
    for epsg in sorted({p.epsg for p in pieces}):
        idx = [i for i, p in enumerate(pieces) if p.epsg == epsg]
        geoms = [pieces[i].geometry for i in idx]
        tree = shapely.STRtree(geoms)
        for a, b in zip(*tree.query(geoms, predicate="intersects"), strict=True):
            i, j = idx[int(a)], idx[int(b)]
            if (
                i < j
                and pieces[i].chunk_id != pieces[j].chunk_id
                and shapely.intersection(geoms[int(a)], geoms[int(b)]).length > 0
            ):
                groups.join(i, j)


def _join_zone_edges(pieces: Sequence[Piece], groups: _Groups, gsd: float) -> None:
    """Join pieces of different zones that lie within one pixel of each other."""
    zones = sorted({p.epsg for p in pieces})
    for k, a_epsg in enumerate(zones):
        a_idx = [i for i, p in enumerate(pieces) if p.epsg == a_epsg]
        if not a_idx:
            continue
        tree = shapely.STRtree([pieces[i].geometry for i in a_idx])
        for b_epsg in zones[k + 1 :]:
            for j, piece in enumerate(pieces):
                if piece.epsg != b_epsg:
                    continue
                moved = to_epsg(piece.geometry, a_epsg, src=b_epsg, max_segment_deg=0)
                for hit in tree.query(moved, predicate="dwithin", distance=gsd * 1.01):
                    groups.join(a_idx[int(hit)], j)


def _geometry(members: Sequence[Piece], gsd: float) -> tuple[BaseGeometry, list[int]]:
    """The merged geometry in EPSG:4326 and the zones it spans (largest part first)."""
    pixels: dict[int, int] = {}
    for p in members:
        pixels[p.epsg] = pixels.get(p.epsg, 0) + p.pixels
    zones = sorted(pixels, key=lambda e: (-pixels[e], e))
    main = zones[0]
    parts = [
        unary_union([p.geometry for p in members if p.epsg == epsg])
        if epsg == main
        else to_epsg(
            unary_union([p.geometry for p in members if p.epsg == epsg]),
            main,
            src=epsg,
            max_segment_deg=0,
        )
        for epsg in zones
    ]
    merged = unary_union(parts)
    if len(zones) > 1:
        half = gsd / 2
        merged = merged.buffer(half, join_style="mitre").buffer(-half, join_style="mitre")
    return to_epsg(merged, 4326, src=main, max_segment_deg=0), zones


def _row(members: Sequence[Piece], table: dict[int, Acquisition], gsd: float) -> dict:
    geom, zones = _geometry(members, gsd)
    n = sum(p.pixels for p in members)
    acqs = sorted({a for p in members for a in p.acquisitions})
    return {
        "area_ha": n * gsd * gsd / 1e4,
        "mean_prob": sum(p.prob_sum for p in members) / n,
        "max_prob": max(p.prob_max for p in members),
        "pixels": n,
        "acquisitions": ";".join(i for a in acqs for i in table[a].item_ids),
        "dates": ";".join(dict.fromkeys(table[a].when.date().isoformat() for a in acqs)),
        "epsg": ";".join(str(z) for z in sorted(zones)),
        "_zone": zones[0],
        "geometry": geom,
    }


def merge_pieces(
    pieces: Sequence[Piece], table: Sequence[Acquisition], rules: FarmRules
) -> list[dict]:
    """Rows of mapped farms (no ids yet), at least ``min_area_m2``, in EPSG:4326."""
    groups = _Groups(len(pieces))
    _join_seams(pieces, groups)
    _join_zone_edges(pieces, groups, rules.gsd)
    by_index = {a.index: a for a in table}
    rows = [_row([pieces[i] for i in g], by_index, rules.gsd) for g in groups.groups()]
    return [r for r in rows if r["area_ha"] * 1e4 >= rules.min_area_m2]


def _label_match(
    geom: BaseGeometry, zone: int, labels: gpd.GeoDataFrame
) -> tuple[str | None, str | None, float]:
    """``(osm id, label farm id, IoU)`` of the best-overlapping label farm (IoU in ``zone``)."""
    if labels.empty:
        return None, None, 0.0
    best: tuple[str | None, str | None, float] = (None, None, 0.0)
    mine = to_epsg(geom, zone, max_segment_deg=0)
    for k in sorted(int(i) for i in labels.sindex.query(geom, predicate="intersects")):
        other = to_epsg(labels.geometry.iloc[k], zone, max_segment_deg=0)
        union = shapely.union(mine, other).area
        iou = shapely.intersection(mine, other).area / union if union > 0 else 0.0
        if iou > best[2]:
            row = labels.iloc[k]
            best = (str(row["osm_id"]), str(row["farm_id"]), float(iou))
    return best


def farm_frame(
    rows: Sequence[dict], labels: gpd.GeoDataFrame, match_iou: float
) -> gpd.GeoDataFrame:
    """Mapped farms with ids (``m0001``... by centroid lon, lat) and their label relation."""
    rows = sorted(
        rows,
        key=lambda r: (round(r["geometry"].centroid.x, 7), round(r["geometry"].centroid.y, 7)),
    )
    out = []
    for k, row in enumerate(rows, start=1):
        osm_id, farm_id, iou = _label_match(row["geometry"], row["_zone"], labels)
        matched = iou >= match_iou
        out.append(
            {
                **{c: row[c] for c in COLUMNS if c in row},
                "farm_id": f"m{k:04d}",
                "in_osm": matched,
                "osm_id": osm_id if matched else None,
                "label_farm_id": farm_id if matched else None,
                "label_iou": iou,
                "geometry": row["geometry"],
            }
        )
    frame = pd.DataFrame(out, columns=[*COLUMNS, "geometry"]).astype(
        {
            "farm_id": str,
            "area_ha": "float64",
            "mean_prob": "float64",
            "max_prob": "float64",
            "pixels": "int64",
            "acquisitions": str,
            "dates": str,
            "epsg": str,
            "in_osm": bool,
            "label_iou": "float64",
        }
    )
    return gpd.GeoDataFrame(
        frame, geometry=gpd.GeoSeries(list(frame["geometry"]), crs=4326), crs=4326
    )
