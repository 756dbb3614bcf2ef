"""Where things are planted: farms, distractors and snow blobs as polygons (EPSG:32618 metres).

Pure functions of masks, grids, parameters and a ``numpy`` generator; nothing here touches
pixels or files. Placement is rejection sampling: draw a centre on eligible land, draw a
shape, keep it when it sits on land, inside the crop margin and apart from earlier objects.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from scipy import ndimage
from shapely.geometry import Polygon, box

from pipeline.demo import shapes
from pipeline.demo.pixels import footprint_window, pixel_to_xy, window_grid
from pipeline.demo.spectra import FARM_GAIN_REL, ndwi
from pipeline.geo.masks import rasterize_mask
from pipeline.geo.raster import Grid

log = logging.getLogger(__name__)

FarmRole = Literal["plant_way", "plant_relation", "plant_with_generators", "generators_only"]
DistractorKind = Literal["dark_roof", "asphalt", "wet_soil", "pv_lookalike"]

#: NDWI (B03, B08) below which a pixel counts as land.
LAND_NDWI_MAX: Final[float] = -0.1
#: Blue reflectance above which land is too bright for a farm (beach, sand, built-up).
FARMLAND_BLUE_MAX: Final[float] = 0.16
#: Mean red reflectance (7 x 7 pixels) above which land is an open field rather than forest.
FIELD_RED_MIN: Final[float] = 0.058
#: Farms, distractors and snow keep this far from water (metres).
WATER_SETBACK_M: Final[float] = 60.0
#: Farms keep this far from the crop edge (metres).
EDGE_MARGIN_M: Final[float] = 200.0
#: Minimum gap between two farms (metres); leaves room for snow beside each.
FARM_SPACING_M: Final[float] = 400.0
#: Share of a farm footprint that must be on open fields (the rest may be hedges, woods).
MIN_FARMLAND_SHARE: Final[float] = 0.75
#: Share of a farm footprint that must be on dry land.
MIN_DRY_SHARE: Final[float] = 0.995
#: Default range of the gap between a farm's edge and the snow planted beside it (metres;
#: ``world.snow_gap_m``). The audit measures attribution outside the farm and its buffer ring
#: (20 m by default), so snow starts beyond it; it stays within 200 m so that a 128 px training
#: crop holding the farm usually holds its snow too (context the model never sees cannot be
#: learned as a shortcut). Snow also keeps the lower bound from every other farm.
SNOW_BESIDE_GAP_M: Final[tuple[float, float]] = (60.0, 200.0)
#: Share of a snow blob that must lie on land (snow on open water would be ice, not snow).
SNOW_MIN_LAND_SHARE: Final[float] = 0.8
#: A farm "has snow beside it" in the truth when snow lies within this distance (metres).
SNOW_NEAR_M: Final[float] = 500.0
#: Probabilities of 1 and 2 snow blobs beside a chosen farm.
SNOW_BLOBS_P: Final[tuple[float, float]] = (0.6, 0.4)
#: Distractor kinds, their area ranges (ha) and cover ranges (share of pixel).
DISTRACTOR_AREA_HA: Final[dict[str, tuple[float, float]]] = {
    "dark_roof": (0.15, 1.0),
    "asphalt": (0.3, 3.0),
    "wet_soil": (1.0, 8.0),
    "pv_lookalike": (2.0, 30.0),
}
DISTRACTOR_COVER: Final[dict[str, tuple[float, float]]] = {
    "dark_roof": (0.85, 1.0),
    "asphalt": (0.9, 1.0),
    "wet_soil": (0.6, 0.95),
    "pv_lookalike": (0.55, 0.8),
}
DISTRACTOR_MIN_GAP_M: Final[float] = 60.0
#: Rows of panels: pitch (row spacing) range in metres.
ROW_PITCH_M: Final[tuple[float, float]] = (7.0, 12.0)
#: A holed farm's panelled area is at least this (ha), so the hole spans whole pixels.
MIN_HOLED_FARM_HA: Final[float] = 6.0
MAX_ATTEMPTS: Final[int] = 400
#: A farm centre needs open, dry room of this share of its equal-area radius around it.
ROOM_SHARE: Final[float] = 0.5


@dataclass(frozen=True)
class FarmPlan:
    """One planted farm.

    Attributes:
        index: 0-based order of planting.
        geometry: Footprint (EPSG:32618); panels fill it, holes included as interior rings.
        shape: Shape family.
        role: How OSM draws it (closed plant way, multipolygon relation, plant plus generator
            ways, generator ways only).
        pv_cover: Share of the ground covered by panels.
        row_azimuth_deg: Direction of the panel rows, degrees counter-clockwise from east.
        row_pitch_m: Row spacing in metres.
        gain: Brightness factor of this farm's modules.
    """

    index: int
    geometry: Polygon
    shape: shapes.FarmShape
    role: FarmRole
    pv_cover: float
    row_azimuth_deg: float
    row_pitch_m: float
    gain: float


@dataclass(frozen=True)
class DistractorPlan:
    """An unlabelled look-alike: ``kind`` material covering ``cover`` of ``geometry``, laid in
    rows (``(azimuth_deg, pitch_m)``, like panel rows) or, with ``rows`` ``None``, evenly;
    ``gain`` scales the material's brightness (a look-alike planned as a farm takes the farm
    planner's module brightness)."""

    index: int
    geometry: Polygon
    kind: DistractorKind
    cover: float
    rows: tuple[float, float] | None = None
    gain: float = 1.0


@dataclass(frozen=True)
class SnowPlan:
    """A snow blob; ``near_farm`` is the index of the farm it was planted beside, or ``None``."""

    index: int
    geometry: Polygon
    near_farm: int | None
    depth: float


def land_mask(green: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """Land (not water, NDWI < :data:`LAND_NDWI_MAX`) on the 10 m grid, bool (H, W)."""
    return ndwi(green, nir) < LAND_NDWI_MAX


def dry_mask(land: np.ndarray, res: float) -> np.ndarray:
    """Land at least :data:`WATER_SETBACK_M` from water, bool (H, W)."""
    return ndimage.binary_erosion(land, iterations=max(1, round(WATER_SETBACK_M / res)))


def farmland_mask(land: np.ndarray, blue: np.ndarray, red: np.ndarray) -> np.ndarray:
    """Open fields: land, not bright (beach, built-up), not dark forest, bool (H, W).

    Forest is told apart by its 7 x 7 pixel mean red reflectance below
    :data:`FIELD_RED_MIN` (bare and cropped fields are brighter in winter).
    """
    red_mean = ndimage.uniform_filter(red.astype(np.float32), size=7)
    fields = land & (blue < FARMLAND_BLUE_MAX) & (red_mean > FIELD_RED_MIN)
    return ndimage.binary_closing(fields, iterations=2) & land


def coverage_share(geom: Polygon, mask: np.ndarray, grid: Grid) -> float:
    """Share of ``geom``'s pixels (centre rule) on which ``mask`` is true (0 if none)."""
    window = footprint_window(geom, grid)
    if window is None:
        return 0.0
    r0, r1, c0, c1 = window
    inside = rasterize_mask([geom], window_grid(grid, window)) == 1
    n = int(inside.sum())
    return float(mask[r0:r1, c0:c1][inside].sum()) / n if n else 0.0


def _inner_box(grid: Grid, margin: float) -> Polygon:
    left, bottom, right, top = grid.bounds
    return box(left + margin, bottom + margin, right - margin, top - margin)


def _random_point(
    rng: np.random.Generator, candidates: np.ndarray, grid: Grid
) -> tuple[float, float]:
    flat = int(candidates[rng.integers(len(candidates))])
    row, col = divmod(flat, grid.width)
    return pixel_to_xy(grid, col + rng.uniform(), row + rng.uniform())


def _far_from(geom: Polygon, others: Sequence[Polygon], gap: float) -> bool:
    return all(geom.distance(o) >= gap for o in others)


def within_m(grid: Grid, geoms: Sequence[Polygon], max_m: float | None) -> np.ndarray | None:
    """Pixels of ``grid`` whose centres lie within ``max_m`` metres of any of ``geoms`` (bool),
    or ``None`` (no limit) when ``max_m`` is ``None``."""
    if max_m is None:
        return None
    inside = rasterize_mask(list(geoms), grid).astype(bool)
    return ndimage.distance_transform_edt(~inside) * grid.res <= max_m


def _gap_within(geom: Polygon, others: Sequence[Polygon], low: float, high: float | None) -> bool:
    """``geom`` is at least ``low`` from every one of ``others`` and, unless ``high`` is
    ``None``, at most ``high`` from the nearest (one distance per other)."""
    nearest = min((geom.distance(o) for o in others), default=math.inf)
    return nearest >= low and (high is None or nearest <= high)


def _roomy(room: np.ndarray, area: float, res: float) -> np.ndarray:
    """Flat indices of pixels with at least ``ROOM_SHARE`` of a circle of ``area``'s radius
    of room around them."""
    radius_px = math.sqrt(area / math.pi) / res
    return np.flatnonzero(room >= ROOM_SHARE * radius_px)


def farm_roles(n: int) -> list[FarmRole]:
    """Roles in planting order: one relation with a hole, one generator-only farm, about one
    in ten farms with generator sub-arrays inside the plant, the rest closed plant ways."""
    roles: list[FarmRole] = ["plant_relation", "generators_only"]
    roles += ["plant_with_generators"] * max(1, n // 10)
    roles += ["plant_way"] * max(0, n - len(roles))
    return roles[:n]


def _shape_for(role: FarmRole, rng: np.random.Generator) -> shapes.FarmShape:
    if role == "plant_relation":
        return "with_hole"
    if role == "generators_only":
        return "rectangle"
    return shapes.FARM_SHAPES[int(rng.choice(len(shapes.FARM_SHAPES), p=shapes.FARM_SHAPE_P))]


def log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A draw uniform in ``log`` between ``lo`` and ``hi``."""
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def plan_farms(
    rng: np.random.Generator,
    farmland: np.ndarray,
    dry: np.ndarray,
    grid: Grid,
    n: int,
    area_ha: tuple[float, float],
    pv_cover: tuple[float, float],
    avoid: Sequence[Polygon] = (),
    noun: str = "farm",
    avoid_gap_m: tuple[float, float | None] = (FARM_SPACING_M, None),
    shrink: bool = True,
    roles: Sequence[FarmRole] | None = None,
) -> list[FarmPlan]:
    """Place up to ``n`` farms on ``farmland`` and ``dry`` land (bool, on ``grid``), apart
    from each other by :data:`FARM_SPACING_M` and from ``avoid`` by ``avoid_gap_m`` (at least
    its first, and at most its second metres from the nearest of ``avoid``, where that is not
    ``None``). ``noun`` names them in the log: the planner also lays out look-alikes.
    A farm that finds no spot is tried smaller every 100 attempts, unless ``shrink`` is false
    (look-alikes, whose sizes must not drift below the farms'). ``roles`` overrides the
    OSM roles :func:`farm_roles` gives ``n`` farms (and so their number and shapes).

    Farms that cannot be placed after :data:`MAX_ATTEMPTS` draws (a small crop, little land)
    are left out (logged at debug level); the caller reports the count.
    """
    # Distance (pixels) to the nearest non-field or wet pixel; centres too close to either are
    # skipped before any polygon is drawn (chessboard: fast, never above the Euclidean one).
    room = ndimage.distance_transform_cdt(farmland & dry, metric="chessboard").astype(np.float32)
    near = within_m(grid, avoid, avoid_gap_m[1])
    if near is not None:
        room[~near] = 0.0
    inner = _inner_box(grid, EDGE_MARGIN_M)
    farms: list[FarmPlan] = []
    for role in farm_roles(n) if roles is None else roles:
        shape = _shape_for(role, rng)
        area = log_uniform(rng, *area_ha) * 1e4
        if shape == "with_hole":
            area = max(area, min(MIN_HOLED_FARM_HA, area_ha[1]) * 1e4)
        candidates = np.empty(0, dtype=np.intp)
        for attempt in range(MAX_ATTEMPTS):
            if attempt % 100 == 0:
                if attempt and shrink:
                    area = max(area * 0.7, area_ha[0] * 1e4)
                candidates = _roomy(room, area, grid.res)
            if len(candidates) == 0:
                continue
            cx, cy = _random_point(rng, candidates, grid)
            geom = shapes.farm_polygon(shape, rng, cx, cy, area)
            if (
                geom.within(inner)
                and _far_from(geom, [f.geometry for f in farms], FARM_SPACING_M)
                and _gap_within(geom, avoid, *avoid_gap_m)
                and coverage_share(geom, farmland, grid) >= MIN_FARMLAND_SHARE
                and coverage_share(geom, dry, grid) >= MIN_DRY_SHARE
            ):
                farms.append(
                    FarmPlan(
                        index=len(farms),
                        geometry=geom,
                        shape=shape,
                        role=role,
                        pv_cover=float(rng.uniform(*pv_cover)),
                        row_azimuth_deg=float(rng.uniform(0, 180)),
                        row_pitch_m=float(rng.uniform(*ROW_PITCH_M)),
                        gain=float(rng.normal(1.0, FARM_GAIN_REL)),
                    )
                )
                break
        else:
            log.debug(
                "could not place %s %d (%s, %.1f ha) after %d attempts",
                noun,
                len(farms),
                shape,
                area / 1e4,
                MAX_ATTEMPTS,
            )
    return farms


def plan_distractors(
    rng: np.random.Generator,
    land: np.ndarray,
    grid: Grid,
    n: int,
    farms: Sequence[FarmPlan],
    kinds: tuple[DistractorKind, ...] = ("dark_roof", "asphalt", "wet_soil"),
    gap_m: float = DISTRACTOR_MIN_GAP_M,
    rows: bool = False,
    max_gap_m: float | None = None,
) -> list[DistractorPlan]:
    """Place ``n`` distractors of random ``kinds`` on ``land``, ``gap_m`` from every farm and,
    unless ``max_gap_m`` is ``None``, at most ``max_gap_m`` from the nearest; with ``rows``,
    each laid in rows of a random direction and pitch as farms are."""
    farm_geoms = [f.geometry for f in farms]
    near = within_m(grid, farm_geoms, max_gap_m)
    candidates = np.flatnonzero(land if near is None else land & near)
    inner = _inner_box(grid, 20.0)
    out: list[DistractorPlan] = []
    for _ in range(n if len(candidates) else 0):
        kind = kinds[int(rng.integers(len(kinds)))]
        area = log_uniform(rng, *DISTRACTOR_AREA_HA[kind]) * 1e4
        for _attempt in range(MAX_ATTEMPTS // 4):
            cx, cy = _random_point(rng, candidates, grid)
            geom = (
                shapes.blob(rng, cx, cy, area)
                if kind == "wet_soil"
                else shapes.rectangle(rng, cx, cy, area)
            )
            if geom.within(inner) and _gap_within(geom, farm_geoms, gap_m, max_gap_m):
                cover = float(rng.uniform(*DISTRACTOR_COVER[kind]))
                row_layout = (
                    (float(rng.uniform(0, 180)), float(rng.uniform(*ROW_PITCH_M))) if rows else None
                )
                out.append(DistractorPlan(len(out), geom, kind, cover, row_layout))
                break
    return out


def as_lookalikes(twins: Sequence[FarmPlan]) -> list[DistractorPlan]:
    """Farm plans turned into unlabelled PV look-alikes with the same footprint, panel rows and
    module brightness (``world.lookalike_layout: farms``)."""
    return [
        DistractorPlan(
            t.index,
            t.geometry,
            "pv_lookalike",
            t.pv_cover,
            (t.row_azimuth_deg, t.row_pitch_m),
            t.gain,
        )
        for t in twins
    ]


def snow_budget(
    rng: np.random.Generator,
    owners: Sequence[int],
    fraction: float,
    area_ha: tuple[float, float],
) -> list[tuple[int, float]]:
    """The snow to plant: ``(owner index, blob area m²)`` pairs.

    A share ``fraction`` of the owners (farms or look-alikes) is chosen; each gets 1 or 2 blobs
    (:data:`SNOW_BLOBS_P`) of log-uniform area in ``area_ha``.
    """
    k = round(fraction * len(owners))
    chosen = (
        sorted(rng.choice(np.asarray(owners, dtype=int), size=k, replace=False).tolist())
        if k
        else []
    )
    budget = []
    for farm in chosen:
        for _ in range(1 + int(rng.choice(2, p=SNOW_BLOBS_P))):
            budget.append((int(farm), log_uniform(rng, *area_ha) * 1e4))
    return budget


def _snow_ok(
    geom: Polygon, inner: Polygon, land: np.ndarray, grid: Grid, others: Sequence[Polygon]
) -> bool:
    return (
        geom.within(inner)
        and _far_from(geom, others, 20.0)
        and coverage_share(geom, land, grid) >= SNOW_MIN_LAND_SHARE
    )


def place_snow_beside(
    rng: np.random.Generator,
    farm: Polygon,
    area: float,
    land: np.ndarray,
    grid: Grid,
    farms: Sequence[Polygon],
    taken: Sequence[Polygon],
    shun: Sequence[Polygon] = (),
    gap_m: tuple[float, float] = SNOW_BESIDE_GAP_M,
) -> Polygon | None:
    """A blob whose edge is ``gap_m`` from ``farm`` (any owner footprint), at least
    ``gap_m[0]`` from every farm and :data:`SNOW_NEAR_M` from every ``shun`` footprint;
    ``None`` if no spot is found."""
    inner = _inner_box(grid, 20.0)
    radius = math.sqrt(area / math.pi)
    lo, hi = gap_m
    for _ in range(MAX_ATTEMPTS // 4):
        ring = farm.buffer(rng.uniform(lo + 10.0, hi - 10.0) + radius).exterior
        p = ring.interpolate(rng.uniform(0, ring.length))
        geom = shapes.blob(rng, p.x, p.y, area)
        gap = geom.distance(farm)
        if (
            lo <= gap <= hi
            and _far_from(geom, farms, lo)
            and _far_from(geom, shun, SNOW_NEAR_M)
            and _snow_ok(geom, inner, land, grid, taken)
        ):
            return geom
    return None


def place_snow_anywhere(
    rng: np.random.Generator,
    area: float,
    land: np.ndarray,
    grid: Grid,
    farms: Sequence[Polygon],
    taken: Sequence[Polygon],
    gap_m: float,
) -> Polygon | None:
    """A blob at a random spot on ``land``, ``gap_m`` from every farm; ``None`` if none found.

    Where it lands says nothing about farms: near one only as often as chance puts it there.
    """
    candidates = np.flatnonzero(land)
    inner = _inner_box(grid, 20.0)
    for _ in range(MAX_ATTEMPTS // 4 if len(candidates) else 0):
        cx, cy = _random_point(rng, candidates, grid)
        geom = shapes.blob(rng, cx, cy, area)
        if _far_from(geom, farms, gap_m) and _snow_ok(geom, inner, land, grid, taken):
            return geom
    return None


#: A snow blob and what it is planted beside: (owner footprint, farm index or ``None``, area
#: m²); an owner of ``None`` places the blob anywhere on land (:func:`place_snow_anywhere`).
SnowOrder = tuple[Polygon | None, int | None, float]


def plan_snow(
    rng: np.random.Generator,
    orders: Sequence[SnowOrder],
    land: np.ndarray,
    grid: Grid,
    farms: Sequence[FarmPlan],
    taken: Sequence[Polygon],
    shun: Sequence[Polygon] = (),
    gap_m: tuple[float, float] = SNOW_BESIDE_GAP_M,
) -> tuple[list[SnowPlan], int]:
    """Place each ordered blob beside its owner (a farm or a look-alike), or anywhere.

    Args:
        orders: What to plant beside what (see :data:`SnowOrder`).
        gap_m: Range of the gap between the owner's edge and its blob (metres).
        taken: Footprints snow must not touch (distractors).
        shun: Footprints snow keeps :data:`SNOW_NEAR_M` from (in the confounded world:
            look-alikes, so that snow never sits beside an unlabelled PV-like object, and
            test-area farms, so that the test area stays snow-free).

    Returns:
        The blobs and the number of ordered blobs that found no spot.
    """
    farm_geoms = [f.geometry for f in farms]
    placed: list[SnowPlan] = []
    failed = 0
    for owner, farm, area in orders:
        others = [*taken, *(s.geometry for s in placed)]
        geom = (
            place_snow_anywhere(rng, area, land, grid, farm_geoms, others, gap_m[0])
            if owner is None
            else place_snow_beside(rng, owner, area, land, grid, farm_geoms, others, shun, gap_m)
        )
        if geom is None:
            failed += 1
            continue
        placed.append(SnowPlan(len(placed), geom, farm, float(rng.uniform(0.85, 1.0))))
    if failed:
        log.warning(
            "%d of %d snow blobs found no spot (small crop or little land)", failed, len(orders)
        )
    return placed, failed


def snow_distances(farms: Sequence[FarmPlan], snow: Sequence[SnowPlan]) -> list[float]:
    """Distance (m) from each farm's edge to the nearest snow blob (``inf`` without snow)."""
    return [min((f.geometry.distance(s.geometry) for s in snow), default=math.inf) for f in farms]


def plan_rooftop(
    rng: np.random.Generator, land: np.ndarray, grid: Grid, avoid: Sequence[Polygon]
) -> Polygon | None:
    """A tiny rooftop array (0.05-0.2 ha) on land, never planted in pixels."""
    candidates = np.flatnonzero(land)
    inner = _inner_box(grid, 50.0)
    for _ in range(MAX_ATTEMPTS if len(candidates) else 0):
        cx, cy = _random_point(rng, candidates, grid)
        geom = shapes.rectangle(rng, cx, cy, rng.uniform(500.0, 2000.0))
        if geom.within(inner) and _far_from(geom, avoid, 100.0):
            return geom
    return None
