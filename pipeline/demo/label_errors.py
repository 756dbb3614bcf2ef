"""Label errors of the demo world's OSM file: unmapped farms, ghost labels, shifted outlines.

OpenStreetMap lags behind the ground and is sometimes wrong. The demo world plants every farm
in the pixels but writes its OSM file with three kinds of error (``world.unmapped_farms``,
``world.ghost_labels``, ``world.shifted_labels``), recorded in the truth so that a triage of
labels against a model's map can be scored:

- an *unmapped* farm is built (planted) but absent from the OSM file;
- a *ghost* label is an OSM farm where nothing is planted (a planned site mapped from a permit,
  a site under construction): a farm-sized polygon on open fields, away from everything
  planted;
- a *shifted* outline is an OSM farm moved a few tens of metres (a misaligned trace) while the
  farm stays where it is.

Pure functions of plans, masks and a generator; the OSM drawing is :mod:`pipeline.demo.osm`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

import numpy as np
from shapely import affinity
from shapely.geometry import Polygon

from pipeline.demo import layout
from pipeline.geo.raster import Grid
from pipeline.geo.splits import SPLITS, block_split

GhostKind = Literal["planned", "construction"]

#: Splits that receive the unmapped farms (and the ghosts), in turn: the training area first
#: (the model learns to ignore what is unlabelled there), then the held-out areas.
ERROR_SPLITS: Final[tuple[str, ...]] = ("train", "test", "train", "val")
GHOST_SPLITS: Final[tuple[str, ...]] = ("train", "test", "val")
#: Ghost kinds in turn: the first is a plain ``power=plant`` (every labels reader takes it).
GHOST_KINDS: Final[tuple[GhostKind, ...]] = ("planned", "construction")
#: A ghost keeps this far from every planted object (farms, distractors, snow), metres.
GHOST_GAP_M: Final[float] = 150.0


@dataclass(frozen=True)
class LabelErrors:
    """Which planted farms the OSM file gets wrong.

    Attributes:
        unmapped: Indices of farms left out of the OSM file.
        shifts: Farm index -> ``(dx, dy)`` metres (EPSG:32618) its OSM outline is moved by.
    """

    unmapped: tuple[int, ...] = ()
    shifts: dict[int, tuple[float, float]] | None = None

    def shift_of(self, index: int) -> tuple[float, float]:
        """The outline shift of farm ``index`` (``(0, 0)`` when it is not shifted)."""
        return (self.shifts or {}).get(index, (0.0, 0.0))


@dataclass(frozen=True)
class GhostPlan:
    """An OSM farm with nothing planted: ``geometry`` (EPSG:32618) and what the tags say."""

    index: int
    geometry: Polygon
    kind: GhostKind


def _shares_block(farm: int, blocks: Sequence[str]) -> bool:
    return sum(b == blocks[farm] for b in blocks) > 1


def choose_unmapped(
    rng: np.random.Generator,
    farms: Sequence[layout.FarmPlan],
    splits: Sequence[tuple[str, str]],
    n: int,
) -> tuple[int, ...]:
    """``n`` farms drawn as one closed way to leave unmapped, split by split in the order of
    :data:`ERROR_SPLITS` (any split when one runs out), preferring farms that share their
    block with another farm (whose training patches then show the unmapped one)."""
    blocks = [block for block, _ in splits]
    pool = [f.index for f in farms if f.role == "plant_way"]
    chosen: list[int] = []
    for slot in range(min(n, len(pool))):
        want = ERROR_SPLITS[slot % len(ERROR_SPLITS)]
        left = [i for i in pool if i not in chosen]
        in_split = [i for i in left if splits[i][1] == want] or left
        shared = [i for i in in_split if _shares_block(i, blocks)] or in_split
        chosen.append(int(rng.choice(shared)))
    return tuple(sorted(chosen))


def choose_shifts(
    rng: np.random.Generator,
    farms: Sequence[layout.FarmPlan],
    exclude: Sequence[int],
    n: int,
    shift_m: tuple[float, float],
) -> dict[int, tuple[float, float]]:
    """``n`` closed-way farms not in ``exclude``, each with a shift of ``shift_m`` metres
    (uniform) in a uniform random direction, as ``(dx, dy)``."""
    pool = [f.index for f in farms if f.role == "plant_way" and f.index not in exclude]
    k = min(n, len(pool))
    picks = sorted(rng.choice(np.asarray(pool, dtype=int), size=k, replace=False).tolist())
    out = {}
    for i in picks:
        distance, angle = rng.uniform(*shift_m), rng.uniform(0.0, 2.0 * math.pi)
        out[int(i)] = (distance * math.cos(angle), distance * math.sin(angle))
    return out


def plan_label_errors(
    rng: np.random.Generator,
    farms: Sequence[layout.FarmPlan],
    splits: Sequence[tuple[str, str]],
    counts: tuple[int, int],
    shift_m: tuple[float, float],
) -> LabelErrors:
    """Unmapped farms and shifted outlines (``counts`` = ``(unmapped, shifted)``)."""
    unmapped = choose_unmapped(rng, farms, splits, counts[0])
    return LabelErrors(unmapped, choose_shifts(rng, farms, unmapped, counts[1], shift_m))


def shifted(farm: layout.FarmPlan, errors: LabelErrors) -> layout.FarmPlan:
    """``farm`` with the geometry OSM draws for it (moved when its outline is shifted)."""
    dx, dy = errors.shift_of(farm.index)
    if dx == 0.0 and dy == 0.0:
        return farm
    return replace(farm, geometry=affinity.translate(farm.geometry, dx, dy))


def split_codes(
    grid: Grid, block_size_m: float, fractions: tuple[float, float, float], seed: int
) -> np.ndarray:
    """Index into :data:`~pipeline.geo.splits.SPLITS` of each pixel's block, int8 (H, W),
    as :func:`~pipeline.geo.splits.block_split` assigns blocks (pixel centres)."""
    t = grid.transform
    xs = t.c + (np.arange(grid.width) + 0.5) * t.a
    ys = t.f + (np.arange(grid.height) + 0.5) * t.e
    bx = np.floor(xs / block_size_m).astype(int)
    by = np.floor(ys / block_size_m).astype(int)
    epsg = grid.crs.to_epsg()
    code = {
        (x, y): SPLITS.index(block_split(f"{epsg}:{x}:{y}", fractions, seed))
        for x in np.unique(bx)
        for y in np.unique(by)
    }
    table = np.array([[code[(x, y)] for x in bx] for y in np.unique(by)], dtype=np.int8)
    rows = np.searchsorted(np.unique(by), by)
    return table[rows]


@dataclass(frozen=True)
class GhostGround:
    """Where ghosts may go: open fields and dry land (bool, on ``grid``), and each pixel's split
    (:func:`split_codes`)."""

    farmland: np.ndarray
    dry: np.ndarray
    grid: Grid
    splits: np.ndarray


def plan_ghosts(
    rng: np.random.Generator,
    n: int,
    ground: GhostGround,
    area_ha: tuple[float, float],
    avoid: Sequence[Polygon],
) -> tuple[list[GhostPlan], int]:
    """``n`` ghost sites laid out as farms are (shapes, sizes, open fields), split by split in
    the order of :data:`GHOST_SPLITS` (anywhere when a split has no room), at least
    :data:`GHOST_GAP_M` from ``avoid`` (everything planted) and
    :data:`~pipeline.demo.layout.FARM_SPACING_M` from each other.

    Returns:
        The ghosts and the number that found no room.
    """
    ghosts: list[GhostPlan] = []
    for slot in range(n):
        want = [str(s) for s in SPLITS].index(GHOST_SPLITS[slot % len(GHOST_SPLITS)])
        taken = [*avoid, *(g.geometry for g in ghosts)]
        for mask in (ground.farmland & (ground.splits == want), ground.farmland):
            placed = layout.plan_farms(
                rng,
                mask,
                ground.dry,
                ground.grid,
                1,
                area_ha,
                (0.5, 0.5),
                taken,
                noun="ghost label",
                avoid_gap_m=(GHOST_GAP_M, None),
                roles=["plant_way"],
            )
            if placed:
                kind = GHOST_KINDS[slot % len(GHOST_KINDS)]
                ghosts.append(GhostPlan(len(ghosts), placed[0].geometry, kind))
                break
    return ghosts, n - len(ghosts)


#: The OSM file is a snapshot of this moment; every element's timestamp is earlier.
OSM_SNAPSHOT: Final[dt.datetime] = dt.datetime(2016, 1, 12, tzinfo=dt.UTC)
#: Earliest edit of a farm that exists from the first acquisition on.
MAPPING_START: Final[dt.datetime] = dt.datetime(2014, 3, 1, tzinfo=dt.UTC)
#: When ghosts were mapped: planned sites from permits, construction sites once work began.
GHOST_MAPPED: Final[dict[GhostKind, tuple[dt.datetime, dt.datetime]]] = {
    "planned": (dt.datetime(2015, 2, 1, tzinfo=dt.UTC), dt.datetime(2015, 9, 1, tzinfo=dt.UTC)),
    "construction": (dt.datetime(2015, 9, 1, tzinfo=dt.UTC), OSM_SNAPSHOT),
}
#: Extra tags of each ghost kind (beside the plant tags and a name).
GHOST_TAGS: Final[dict[GhostKind, dict[str, str]]] = {
    "planned": {},
    "construction": {"construction": "yes", "opening_date": "2016-09"},
}


def edit_time(rng: np.random.Generator, start: dt.datetime, end: dt.datetime) -> dt.datetime:
    """A whole-second moment uniform in ``[start, end)``."""
    seconds = int((end - start).total_seconds())
    return start + dt.timedelta(seconds=int(rng.integers(0, max(1, seconds))))


def edit_version(rng: np.random.Generator, least: int = 1) -> int:
    """A plausible element version: ``least`` plus 0-2 later edits."""
    return least + int(rng.integers(0, 3))
