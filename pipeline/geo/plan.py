"""Patch plan: where the 256 x 256 patches go (:mod:`pipeline.geo.splits` groups them).

A patch lives in the UTM zone of its centre (EPSG 326zz/327zz); its upper-left corner
``(x0, y0)`` is snapped to multiples of ``gsd`` so patches of one zone share one pixel lattice.
Its grid is ``Affine(gsd, 0, x0, 0, -gsd, y0)``, shape ``(size, size)``.

Positives cover every farm: the farm's bounding box (in the farm's zone) is covered by an
``nx x ny`` block of patches placed with a seeded random offset (so farms are not always
centred); blocks that miss the farm polygon are dropped. Negatives are random patches inside
the AOI at least ``negative_buffer_m`` from any farm; optional hard negatives are centred on
given points. All randomness comes from one ``numpy.random.Generator``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import Point, box
from shapely.geometry.base import BaseGeometry

from pipeline.errors import LabelsError
from pipeline.geo.crs import to_epsg, transformer, utm_epsg
from pipeline.geo.splits import group_patches

PLAN_COLUMNS = (
    "patch_id",
    "epsg",
    "x0",
    "y0",
    "size",
    "gsd",
    "kind",
    "farm_ids",
    "hard",
    "block_m",
)


@dataclass(frozen=True)
class PlanParams:
    """Patch plan settings.

    Attributes:
        size: Patch side in pixels.
        gsd: Pixel size in metres.
        negatives_per_positive: Random negatives per positive patch.
        negative_buffer_m: Minimum distance of a negative patch from any farm, metres.
        max_negative_overlap: Largest share of a negative's area it may share with another
            negative (overlapping patches end up in one split group).
        block_m: Side of the split blocks (``tiles.block_size_m``) patches are kept inside
            when possible, or ``None`` for free placement.
        tries_per_negative: Rejection-sampling budget per wanted negative.
        offset_tries: Random offsets tried per farm to keep its patches inside the AOI.
    """

    size: int = 256
    gsd: float = 10.0
    negatives_per_positive: float = 1.0
    negative_buffer_m: float = 500.0
    max_negative_overlap: float = 0.0
    block_m: float | None = None
    tries_per_negative: int = 200
    offset_tries: int = 20

    @property
    def extent(self) -> float:
        """Patch side in metres."""
        return self.size * self.gsd


@dataclass(frozen=True)
class PlannedPatch:
    """One patch before ids are given: its zone, corner and kind."""

    epsg: int
    x0: float
    y0: float
    kind: str
    hard: bool = False


def footprint(epsg: int, x0: float, y0: float, params: PlanParams) -> BaseGeometry:
    """The patch square in its UTM CRS (``epsg`` is carried by the caller)."""
    del epsg
    return box(x0, y0 - params.extent, x0 + params.extent, y0)


def footprint_lonlat(p: PlannedPatch, params: PlanParams) -> BaseGeometry:
    """The patch footprint in EPSG:4326 (edges densified, so it is a slightly bent square)."""
    square = shapely.segmentize(footprint(p.epsg, p.x0, p.y0, params), params.extent / 8)
    return to_epsg(square, 4326, src=p.epsg, max_segment_deg=0)


def plan_row(
    patch_id: str, p: PlannedPatch, params: PlanParams, farm_ids: Sequence[str] = ()
) -> dict[str, Any]:
    """One row of ``plan.gpkg``: the contract the fetch and tiles stages read."""
    return {
        "patch_id": patch_id,
        "epsg": p.epsg,
        "x0": p.x0,
        "y0": p.y0,
        "size": params.size,
        "gsd": params.gsd,
        "kind": p.kind,
        "farm_ids": json.dumps(list(farm_ids)),
        "hard": p.hard,
        "block_m": params.block_m or 0.0,
        "geometry": footprint_lonlat(p, params),
    }


def plan_frame(rows: Iterable[dict[str, Any]]) -> gpd.GeoDataFrame:
    """Plan rows (:func:`plan_row`) as a typed EPSG:4326 GeoDataFrame, columns in order."""
    df = pd.DataFrame(list(rows), columns=[*PLAN_COLUMNS, "geometry"]).astype(
        {
            "patch_id": str,
            "epsg": "int64",
            "x0": "float64",
            "y0": "float64",
            "size": "int64",
            "gsd": "float64",
            "kind": str,
            "farm_ids": str,
            "hard": bool,
            "block_m": "float64",
        }
    )
    return gpd.GeoDataFrame(df, geometry="geometry", crs="EPSG:4326")


def snap(value: float, gsd: float, up: bool = False) -> float:
    """``value`` rounded down (or up) to a multiple of ``gsd``."""
    k = math.ceil(value / gsd - 1e-9) if up else math.floor(value / gsd + 1e-9)
    return float(k * gsd)


def centred(lon: float, lat: float, params: PlanParams) -> PlannedPatch:
    """A patch whose centre is nearest ``(lon, lat)``, in that point's UTM zone."""
    epsg = utm_epsg(lon, lat)
    c = to_epsg(Point(lon, lat), epsg, max_segment_deg=0)
    half = params.extent / 2
    return PlannedPatch(
        epsg, snap(c.x - half, params.gsd), snap(c.y + half, params.gsd, up=True), "negative"
    )


def clamp_to_block(x0: float, y0: float, params: PlanParams) -> tuple[float, float]:
    """Shift a patch corner so the patch lies inside the split block holding its centre.

    No-op without ``params.block_m`` or when a block is smaller than a patch.
    """
    b, s = params.block_m, params.extent
    if not b or b < s:
        return x0, y0
    bx = math.floor((x0 + s / 2) / b) * b
    by = math.floor((y0 - s / 2) / b) * b
    return min(max(x0, bx), bx + b - s), min(max(y0, by + s), by + b)


def _rezone(p: PlannedPatch, params: PlanParams) -> PlannedPatch:
    """Move ``p`` into the UTM zone of its centre (same centre), if it is not there already."""
    half = params.extent / 2
    c = to_epsg(Point(p.x0 + half, p.y0 - half), 4326, src=p.epsg, max_segment_deg=0)
    if utm_epsg(c.x, c.y) == p.epsg:
        return p
    moved = centred(c.x, c.y, params)
    return PlannedPatch(moved.epsg, moved.x0, moved.y0, p.kind, p.hard)


@dataclass
class _Zones:
    """Per-UTM-zone caches of the AOI and the farms (reprojected once per zone)."""

    aoi: BaseGeometry
    farms: gpd.GeoDataFrame
    buffer_m: float
    _aoi: dict[int, BaseGeometry] = field(default_factory=dict)
    _farms: dict[int, tuple[shapely.STRtree, list[BaseGeometry], shapely.STRtree]] = field(
        default_factory=dict
    )

    def aoi_in(self, epsg: int) -> BaseGeometry:
        if epsg not in self._aoi:
            geom = shapely.make_valid(to_epsg(self.aoi, epsg))
            shapely.prepare(geom)
            self._aoi[epsg] = geom
        return self._aoi[epsg]

    def farms_in(self, epsg: int) -> tuple[shapely.STRtree, list[BaseGeometry], shapely.STRtree]:
        """Farms in ``epsg``: a tree of them, the geometries, a tree of their buffers."""
        if epsg not in self._farms:
            geoms = [to_epsg(g, epsg) for g in self.farms.geometry]
            buffered = [g.buffer(self.buffer_m) if self.buffer_m > 0 else g for g in geoms]
            self._farms[epsg] = (shapely.STRtree(geoms), geoms, shapely.STRtree(buffered))
        return self._farms[epsg]

    def farm_ids(self, p: PlannedPatch, params: PlanParams) -> list[str]:
        tree, geoms, _ = self.farms_in(p.epsg)
        fp = footprint(p.epsg, p.x0, p.y0, params)
        hits = [
            int(i)
            for i in tree.query(fp, predicate="intersects")
            if geoms[int(i)].intersection(fp).area > 0
        ]
        return sorted(str(self.farms["farm_id"].iloc[i]) for i in hits)

    def near_farm(self, p: PlannedPatch, params: PlanParams) -> bool:
        _, _, buffered = self.farms_in(p.epsg)
        fp = footprint(p.epsg, p.x0, p.y0, params)
        return buffered.query(fp, predicate="intersects").size > 0

    def screen(self, lon: np.ndarray, lat: np.ndarray, params: PlanParams) -> list[PlannedPatch]:
        """Patches centred on each ``(lon, lat)`` that lie inside the AOI and away from farms.

        Vectorized per UTM zone; the result keeps the order of the points.
        """
        half, s, gsd = params.extent / 2, params.extent, params.gsd
        zones = np.array([utm_epsg(x, y) for x, y in zip(lon, lat, strict=True)], dtype=int)
        keep: list[tuple[int, PlannedPatch]] = []
        for epsg in np.unique(zones):
            idx = np.flatnonzero(zones == epsg)
            x, y = transformer(4326, int(epsg)).transform(lon[idx], lat[idx])
            x0 = np.floor((np.asarray(x) - half) / gsd + 1e-9) * gsd
            y0 = np.ceil((np.asarray(y) + half) / gsd - 1e-9) * gsd
            if params.block_m and params.block_m >= s:
                b = params.block_m
                bx = np.floor((x0 + half) / b) * b
                by = np.floor((y0 - half) / b) * b
                x0 = np.clip(x0, bx, bx + b - s)
                y0 = np.clip(y0, by + s, by + b)
            boxes = shapely.box(x0, y0 - s, x0 + s, y0)
            ok = shapely.contains(self.aoi_in(int(epsg)), boxes)
            _, _, buffered = self.farms_in(int(epsg))
            hit = buffered.query(boxes, predicate="intersects")[0]
            ok[hit] = False
            keep += [
                (int(idx[k]), PlannedPatch(int(epsg), float(x0[k]), float(y0[k]), "negative"))
                for k in np.flatnonzero(ok)
            ]
        return [p for _, p in sorted(keep, key=lambda t: t[0])]


def _lattice(lo: float, hi: float, gsd: float) -> tuple[int, int] | None:
    """Multiples of ``gsd`` (as integers ``k``, value ``k * gsd``) inside ``[lo, hi]``."""
    a, b = math.ceil(lo / gsd - 1e-9), math.floor(hi / gsd + 1e-9)
    return (a, b) if a <= b else None


@dataclass(frozen=True)
class _Placement:
    """Where a block of ``nx x ny`` patches may go: lattice index ranges of its corner."""

    nx: int
    ny: int
    xr: tuple[int, int]
    yr: tuple[int, int]


def _place(
    bounds: tuple[float, float, float, float],
    params: PlanParams,
    block: tuple[float, float] | None,
) -> _Placement | None:
    """Corner ranges for patches covering ``bounds`` (and inside ``block``'s square, if given).

    The left edge ``x`` satisfies ``x <= minx`` and ``x + nx * S >= maxx``; the top edge ``y``
    ``y >= maxy`` and ``y - ny * S <= miny``; both on the ``gsd`` lattice.
    """
    minx, miny, maxx, maxy = bounds
    s, gsd = params.extent, params.gsd
    for extra in (0, 1):
        nx = max(1, math.ceil((maxx - minx) / s - 1e-9)) + extra
        ny = max(1, math.ceil((maxy - miny) / s - 1e-9)) + extra
        x_lo, x_hi, y_lo, y_hi = maxx - nx * s, minx, maxy, miny + ny * s
        if block is not None and params.block_m:
            bx, by, bm = block[0], block[1], params.block_m
            x_lo, x_hi = max(x_lo, bx), min(x_hi, bx + bm - nx * s)
            y_lo, y_hi = max(y_lo, by + ny * s), min(y_hi, by + bm)
        xr, yr = _lattice(x_lo, x_hi, gsd), _lattice(y_lo, y_hi, gsd)
        if xr is not None and yr is not None:
            return _Placement(nx, ny, xr, yr)
    return None


def _block_of(x: float, y: float, b: float) -> tuple[float, float]:
    return (math.floor(x / b) * b, math.floor(y / b) * b)


def _pieces(
    local: BaseGeometry, params: PlanParams
) -> tuple[list[tuple[BaseGeometry, _Placement]], bool]:
    """The farm as one piece inside one block, or cut along block lines into per-block pieces.

    Returns:
        ``(pieces with their placements, True when the farm fits inside one block)``.
    """
    if params.block_m:
        c = local.centroid
        whole = _place(local.bounds, params, _block_of(c.x, c.y, params.block_m))
        if whole is not None:
            return [(local, whole)], True
        b = params.block_m
        minx, miny, maxx, maxy = local.bounds
        out = []
        for bx in np.arange(math.floor(minx / b) * b, maxx, b):
            for by in np.arange(math.floor(miny / b) * b, maxy, b):
                piece = local.intersection(box(bx, by, bx + b, by + b))
                if piece.area <= 0:
                    continue
                placed = _place(piece.bounds, params, (float(bx), float(by)))
                placed = placed or _place(piece.bounds, params, None)
                if placed is not None:
                    out.append((piece, placed))
        return out, False
    placed = _place(local.bounds, params, None)
    if placed is None:  # cannot happen: the unconstrained range always holds a lattice point
        raise ValueError(f"no patch placement for bounds {local.bounds}")
    return [(local, placed)], False


def farm_patches(
    geom: BaseGeometry, zones: _Zones, params: PlanParams, rng: np.random.Generator
) -> tuple[list[PlannedPatch], bool]:
    """Positive patches covering one farm (lon/lat ``geom``), with a seeded random offset.

    The farm's bounding box (in the UTM zone of its centroid) is covered by ``nx x ny`` patches
    whose corner is drawn uniformly on the pixel lattice among the positions that cover it, so
    farms are not always centred. With ``params.block_m`` the patches are kept inside the split
    block holding the farm; a farm too big for, or lying across, block lines is cut along them
    and each piece is covered inside its own block. Patches of different blocks then never
    overlap, so split groups stay small. Offsets are redrawn (up to ``offset_tries``) until
    the patches lie inside the AOI, when that is possible.

    Returns:
        ``(patches, True when the farm fit inside one split block)``.
    """
    c = geom.centroid
    epsg = utm_epsg(c.x, c.y)
    local = to_epsg(geom, epsg)
    s, gsd = params.extent, params.gsd
    aoi = zones.aoi_in(epsg)
    pieces, inside_one = _pieces(local, params)
    out: list[PlannedPatch] = []
    for piece, pl in pieces:
        best: tuple[float, float, float] | None = None
        for _ in range(max(1, params.offset_tries)):
            x_start = float(rng.integers(pl.xr[0], pl.xr[1] + 1)) * gsd
            y_top = float(rng.integers(pl.yr[0], pl.yr[1] + 1)) * gsd
            square = box(x_start, y_top - pl.ny * s, x_start + pl.nx * s, y_top)
            inside = square.intersection(aoi).area / square.area
            if best is None or inside > best[0] + 1e-12:
                best = (inside, x_start, y_top)
            if inside >= 1 - 1e-9:
                break
        assert best is not None
        _, x_start, y_top = best
        for j in range(pl.ny):
            for i in range(pl.nx):
                x0, y0 = x_start + i * s, y_top - j * s
                fp = footprint(epsg, x0, y0, params)
                if fp.intersection(piece).area > 0:
                    out.append(_rezone(PlannedPatch(epsg, x0, y0, "positive"), params))
    return _fill_gaps(geom, out, params), inside_one


def _fill_gaps(
    geom: BaseGeometry, patches: list[PlannedPatch], params: PlanParams, max_extra: int = 16
) -> list[PlannedPatch]:
    """Add patches until ``geom`` is covered (gaps appear where patches moved UTM zone)."""
    cover = shapely.union_all([footprint_lonlat(p, params) for p in patches])
    for _ in range(max_extra):
        rest = geom.difference(cover)
        if rest.area <= 1e-4 * geom.area:
            break
        pieces = list(getattr(rest, "geoms", [rest]))
        target = max(pieces, key=lambda g: g.area).representative_point()
        p = centred(target.x, target.y, params)
        patches.append(PlannedPatch(p.epsg, p.x0, p.y0, "positive"))
        cover = cover.union(footprint_lonlat(p, params))
    return patches


def _overlap_share(p: PlannedPatch, q: PlannedPatch, params: PlanParams) -> float:
    """Share of a patch's area shared with ``q`` (0 across UTM zones)."""
    if p.epsg != q.epsg:
        return 0.0
    s = params.extent
    dx = min(p.x0, q.x0) + s - max(p.x0, q.x0)
    dy = min(p.y0, q.y0) - (max(p.y0, q.y0) - s)
    return max(0.0, dx) * max(0.0, dy) / (s * s)


def negative_patches(
    n: int, zones: _Zones, params: PlanParams, rng: np.random.Generator, taken: list[PlannedPatch]
) -> tuple[list[PlannedPatch], int]:
    """Up to ``n`` random negatives inside the AOI, away from farms, overlapping other
    negatives by at most ``params.max_negative_overlap`` of their area.

    Candidate centres are drawn uniformly in the AOI's lon/lat bounds, in batches.

    Returns:
        ``(patches, number of draws spent)``.
    """
    minx, miny, maxx, maxy = zones.aoi.bounds
    out: list[PlannedPatch] = []
    others = [q for q in taken if q.kind == "negative"]
    draws = 0
    budget = n * params.tries_per_negative
    while len(out) < n and draws < budget:
        k = min(256, budget - draws)
        draws += k
        lon, lat = rng.uniform(minx, maxx, k), rng.uniform(miny, maxy, k)
        for p in zones.screen(lon, lat, params):
            if len(out) >= n:
                break
            if all(_overlap_share(p, q, params) <= params.max_negative_overlap for q in others):
                out.append(p)
                others.append(p)
    return out, draws


def hard_negative_patches(
    points: Sequence[tuple[float, float]], zones: _Zones, params: PlanParams, limit: int
) -> tuple[list[PlannedPatch], int]:
    """Negatives centred on given lon/lat points (e.g. past false positives), away from farms.

    Returns:
        ``(patches, number of points refused for lying within the farm buffer)``.
    """
    out: list[PlannedPatch] = []
    refused = 0
    for lon, lat in points:
        if len(out) >= limit:
            break
        p = centred(lon, lat, params)
        x0, y0 = clamp_to_block(p.x0, p.y0, params)
        p = PlannedPatch(p.epsg, x0, y0, "negative", hard=True)
        if zones.near_farm(p, params):
            refused += 1
            continue
        out.append(p)
    return out, refused


@dataclass(frozen=True)
class MapNegatives:
    """Hard negatives on an earlier map's non-farms (``labels.hard_negatives``).

    Attributes:
        points: ``(lon, lat)`` centres, weakest evidence first.
        limit: At most this many patches.
        split_at: ``split_at(epsg, x, y)``: the split of the block holding projected ``(x, y)``
            (:func:`pipeline.geo.splits.split_of` with the tiles stage's blocks and seed).
        allowed: Splits a hard negative may end up in.
    """

    points: Sequence[tuple[float, float]]
    limit: int
    split_at: Callable[[int, float, float], str]
    allowed: frozenset[str]


@dataclass
class _Groups:
    """The planned patches' split groups as the tiles stage will form them (shared pixels or a
    shared farm, :func:`pipeline.geo.splits.group_patches`) with each group's split."""

    footprints: list[BaseGeometry]
    group: list[int]
    split: dict[int, str]
    by_farm: dict[str, int]

    @classmethod
    def of(
        cls,
        planned: Sequence[PlannedPatch],
        farms: Sequence[Sequence[str]],
        params: PlanParams,
        split_at: Callable[[int, float, float], str],
    ) -> _Groups:
        footprints = [footprint_lonlat(p, params) for p in planned]
        group = group_patches(footprints, farms)
        half = params.extent / 2
        split = {
            g: split_at(planned[g].epsg, planned[g].x0 + half, planned[g].y0 - half)
            for g in set(group)
        }
        by_farm = {fid: g for ids, g in zip(farms, group, strict=True) for fid in ids}
        return cls(footprints, group, split, by_farm)

    def touched(self, fp: BaseGeometry, farm_ids: Sequence[str]) -> set[int]:
        """Groups a patch of footprint ``fp`` showing ``farm_ids`` would join."""
        hits = {
            g
            for other, g in zip(self.footprints, self.group, strict=True)
            if fp.intersects(other) and fp.intersection(other).area > 1e-9 * fp.area
        }
        return hits | {self.by_farm[f] for f in farm_ids if f in self.by_farm}

    def add(self, fp: BaseGeometry, farm_ids: Sequence[str], group: int, split: str) -> None:
        self.footprints.append(fp)
        self.group.append(group)
        self.split.setdefault(group, split)
        for fid in farm_ids:
            self.by_farm.setdefault(fid, group)


def map_negative_patches(
    extra: MapNegatives, zones: _Zones, params: PlanParams, planned: Sequence[PlannedPatch]
) -> tuple[list[PlannedPatch], dict[str, int]]:
    """Negatives centred on ``extra.points``, each inside its split block, that join the split
    group of at most one planned patch group and land in an allowed split.

    A patch may show labelled farms (the tiles stage draws them into its mask); it then joins
    their group. One that would join two groups (and so move one of them to another split) is
    refused, so every planned patch keeps the split it has without these negatives.

    Returns:
        ``(patches, refusals by reason: duplicate, bridges_groups, split)``.
    """
    refused = {"duplicate": 0, "bridges_groups": 0, "split": 0}
    farms = [zones.farm_ids(p, params) for p in planned]
    groups = _Groups.of(planned, farms, params, extra.split_at)
    corners = {(p.epsg, p.x0, p.y0) for p in planned}
    out: list[PlannedPatch] = []
    half = params.extent / 2
    for lon, lat in extra.points:
        if len(out) >= extra.limit:
            break
        p = centred(lon, lat, params)
        x0, y0 = clamp_to_block(p.x0, p.y0, params)
        p = PlannedPatch(p.epsg, x0, y0, "negative", hard=True)
        if (p.epsg, p.x0, p.y0) in corners:
            refused["duplicate"] += 1
            continue
        fp, ids = footprint_lonlat(p, params), zones.farm_ids(p, params)
        touched = groups.touched(fp, ids)
        if len(touched) > 1:
            refused["bridges_groups"] += 1
            continue
        group = touched.pop() if touched else len(planned) + len(out)
        split = groups.split.get(group) or extra.split_at(p.epsg, p.x0 + half, p.y0 - half)
        if split not in extra.allowed:
            refused["split"] += 1
            continue
        groups.add(fp, ids, group, split)
        corners.add((p.epsg, p.x0, p.y0))
        out.append(p)
    return out, refused


@dataclass(frozen=True)
class Plan:
    """A patch plan and its numbers.

    Attributes:
        patches: GeoDataFrame (EPSG:4326 footprints) with :data:`PLAN_COLUMNS`.
        counts: Positives, negatives, shortfalls, farms left uncovered (for the manifest).
    """

    patches: gpd.GeoDataFrame
    counts: dict[str, int | float]


def plan_patches(
    farms: gpd.GeoDataFrame,
    aoi: BaseGeometry,
    params: PlanParams,
    seed: int,
    hard_points: Sequence[tuple[float, float]] = (),
    max_hard: int = 0,
    map_negatives: MapNegatives | None = None,
) -> Plan:
    """Plan positive, random negative and hard negative patches.

    Args:
        farms: Farms in EPSG:4326 with ``farm_id`` (sorted order is used for determinism).
        aoi: Area of interest, EPSG:4326.
        params: Sizes, ratio and buffer.
        seed: Seed of the one random generator.
        hard_points: ``(lon, lat)`` centres of hard negatives.
        max_hard: At most this many hard negatives.
        map_negatives: Hard negatives on an earlier map's non-farms
            (:func:`map_negative_patches`), planned last, so every other patch and its id
            is as without them.

    Returns:
        The plan; ``patch_id`` runs ``p00000``, ``p00001``, ... positives first.
    """
    rng = np.random.default_rng(seed)
    farms = farms.sort_values("farm_id", kind="stable").reset_index(drop=True)
    zones = _Zones(aoi, farms, params.negative_buffer_m)
    positives: list[PlannedPatch] = []
    seen: set[tuple[int, float, float]] = set()
    aligned = 0
    for geom in farms.geometry:
        patches_of_farm, inside_block = farm_patches(geom, zones, params, rng)
        aligned += inside_block
        for p in patches_of_farm:
            if (p.epsg, p.x0, p.y0) not in seen:
                seen.add((p.epsg, p.x0, p.y0))
                positives.append(p)
    hard, refused = hard_negative_patches(hard_points, zones, params, max_hard)
    wanted = round(params.negatives_per_positive * len(positives))
    negatives, draws = negative_patches(wanted, zones, params, rng, hard)
    from_map, map_refused = (
        map_negative_patches(map_negatives, zones, params, [*positives, *hard, *negatives])
        if map_negatives is not None
        else ([], {})
    )
    patches = [*positives, *hard, *negatives, *from_map]
    gdf = plan_frame(
        plan_row(f"p{k:05d}", p, params, zones.farm_ids(p, params)) for k, p in enumerate(patches)
    )
    covered = _uncovered_farms(farms, gdf[gdf["kind"] == "positive"])
    counts: dict[str, int | float] = {
        "positives": len(positives),
        "negatives": len(negatives),
        "hard_negatives": len(hard),
        "hard_negatives_refused_near_farm": refused,
        "negatives_wanted": wanted,
        "negatives_shortfall": wanted - len(negatives),
        "negative_draws": draws,
        "farms_not_fully_covered": covered,
        "farms_inside_one_block": aligned,
        "farms_across_blocks": len(farms) - aligned,
    }
    if map_negatives is not None:
        counts["map_hard_negatives"] = len(from_map)
        counts.update({f"map_hard_negatives_refused_{k}": v for k, v in map_refused.items()})
    return Plan(gdf, counts)


def _uncovered_farms(farms: gpd.GeoDataFrame, positives: gpd.GeoDataFrame) -> int:
    """Farms less than 99.9 % covered by the union of positive footprints (zone-edge cases)."""
    if positives.empty:
        return len(farms)
    cover = shapely.union_all(list(positives.geometry))
    return int(sum(g.difference(cover).area > 1e-3 * g.area for g in farms.geometry))


def read_hard_points(path: Path | None) -> list[tuple[float, float]]:
    """``(lon, lat)`` of a representative point of every feature of a vector file.

    Args:
        path: ``labels.hard_negatives_file`` (any OGR format and declared CRS), or ``None``.

    Raises:
        LabelsError: the file does not exist or declares no CRS.
    """
    if path is None:
        return []
    if not path.is_file():
        raise LabelsError(
            f"labels.hard_negatives_file {path} does not exist; point it at a "
            "vector file of hard negatives (e.g. predict/false_positives.gpkg) or "
            "remove the key"
        )
    gdf = gpd.read_file(path)
    if gdf.crs is None:
        raise LabelsError(f"labels.hard_negatives_file {path} declares no CRS; save it with one")
    pts = gdf.to_crs(4326).geometry.representative_point()
    return [(p.x, p.y) for p in pts if p is not None and not p.is_empty]
