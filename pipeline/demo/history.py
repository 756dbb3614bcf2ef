"""The demo world's history: which farms stand in which window, and the season's ground.

With ``world.history`` the world is seen in several windows (:mod:`pipeline.demo.calendar`):
the history's windows, then January 2016 (the last). About half the farms
(:data:`INITIAL_SHARE`) stand from the first window; the others are built before a later one,
uniformly, except the unmapped farms (:mod:`pipeline.demo.label_errors`), which are the newest
(built before January: OSM has not caught up). One farm drawn as a closed way is *extended*:
before the second window only part of its footprint (40-60 %, cut across its long side) is
panelled. One farm beyond ``world.n_farms`` is *removed*: it stands in every history window and
is gone in January (its ground is the real scene's again); it stays in the OSM file, a ghost
label whose OSM edit predates the removal.

History acquisitions are rendered from the same real ground, greener the nearer midsummer
(:func:`greenness`, :func:`seasonal`): the January scene's fields and woods are bare, a July
scene's are in leaf, so land cover from spectral indices differs by season as it should.
Pure functions of plans, arrays and a generator.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
from shapely.geometry import Polygon

from pipeline.bands import BANDS, NATIVE_GSD
from pipeline.demo import layout, render
from pipeline.demo.shapes import split_in_two

#: Share of the farms standing from the first window.
INITIAL_SHARE: Final[float] = 0.5
#: The extended farm is drawn among farms at least this large (ha) when there are any.
EXTENDED_MIN_HA: Final[float] = 8.0
#: Window from which the extended farm has its full footprint.
EXTENDED_IN: Final[int] = 1
#: Day of the year of the greenest ground (mid July).
GREENEST_DOY: Final[float] = 196.0
#: Factor each band's land reflectance takes at full summer greenness (:data:`BANDS` order):
#: leaves absorb more red and blue, reflect far more near-infrared, and hold water (lower SWIR).
#:                               B02   B03   B04   B05   B06   B07   B08   B8A   B11   B12
SUMMER_FACTOR: Final[tuple[float, ...]] = (0.85, 1.0, 0.6, 0.95, 1.3, 1.45, 1.5, 1.5, 0.85, 0.7)


@dataclass(frozen=True)
class HistoryPlan:
    """When each farm stands.

    Attributes:
        built: Per farm (planting order), the first window it is planted in.
        last_window: The January window (0 without history).
        extended: Index of the extended farm, or ``None``.
        first_phase: Its footprint before window :data:`EXTENDED_IN` (EPSG:32618).
        removed: The removed farm (index ``len(farms)``), or ``None``.
    """

    built: tuple[int, ...]
    last_window: int = 0
    extended: int | None = None
    first_phase: Polygon | None = None
    removed: layout.FarmPlan | None = None

    def footprint(self, farm: layout.FarmPlan, window: int) -> Polygon | None:
        """``farm``'s planted footprint in ``window`` (``None``: not standing)."""
        if self.removed is not None and farm.index == self.removed.index:
            return farm.geometry if window < self.last_window else None
        if window < self.built[farm.index]:
            return None
        if farm.index == self.extended and window < EXTENDED_IN:
            return self.first_phase
        return farm.geometry

    def standing(self, farms: Sequence[layout.FarmPlan], window: int) -> list[layout.FarmPlan]:
        """The farms (and the removed farm) standing in ``window``, with that window's
        footprint, in planting order."""
        out = []
        for farm in self.all_farms(farms):
            geom = self.footprint(farm, window)
            if geom is not None:
                out.append(farm if geom is farm.geometry else replace(farm, geometry=geom))
        return out

    def all_farms(self, farms: Sequence[layout.FarmPlan]) -> list[layout.FarmPlan]:
        """``farms`` and, last, the removed farm."""
        return [*farms, *([self.removed] if self.removed is not None else [])]


def assign_built(
    rng: np.random.Generator, n: int, newest: Sequence[int], last_window: int
) -> tuple[int, ...]:
    """First window of each of ``n`` farms: ``newest`` in ``last_window``, a share
    :data:`INITIAL_SHARE` of the rest in window 0, the others uniform in 1..``last_window``."""
    if last_window == 0:
        return (0,) * n
    rest = [i for i in range(n) if i not in newest]
    k = min(len(rest), round(INITIAL_SHARE * n))
    first = set(rng.choice(np.asarray(rest, dtype=int), size=k, replace=False).tolist())
    later = rng.integers(1, last_window + 1, size=n)
    return tuple(
        last_window if i in newest else 0 if i in first else int(later[i]) for i in range(n)
    )


def choose_extended(
    rng: np.random.Generator,
    farms: Sequence[layout.FarmPlan],
    built: Sequence[int],
    exclude: Sequence[int],
) -> tuple[int, Polygon] | None:
    """A closed-way farm standing from window 0, not in ``exclude``, preferably of at least
    :data:`EXTENDED_MIN_HA`, and its first-phase footprint; ``None`` when none qualifies."""
    pool = [
        f for f in farms if f.role == "plant_way" and built[f.index] == 0 and f.index not in exclude
    ]
    big = [f for f in pool if f.geometry.area >= EXTENDED_MIN_HA * 1e4] or pool
    if not big:
        return None
    farm = big[int(rng.integers(len(big)))]
    parts = split_in_two(farm.geometry, rng)
    return (farm.index, parts[0]) if len(parts) == 2 else None


def plan_history(
    rng: np.random.Generator,
    farms: Sequence[layout.FarmPlan],
    newest: Sequence[int],
    exclude: Sequence[int],
    last_window: int,
) -> HistoryPlan:
    """Built windows and the extended farm (``exclude``: farms it must not be); the removed
    farm is placed separately (:func:`with_removed`)."""
    built = assign_built(rng, len(farms), newest, last_window)
    if last_window == 0:
        return HistoryPlan(built)
    extended = choose_extended(rng, farms, built, [*newest, *exclude])
    if extended is None:
        return HistoryPlan(built, last_window)
    return HistoryPlan(built, last_window, extended[0], extended[1])


def with_removed(plan: HistoryPlan, removed: layout.FarmPlan | None, index: int) -> HistoryPlan:
    """``plan`` with ``removed`` (planned by the farm planner) as the removed farm, re-indexed
    to ``index`` (the number of farms)."""
    if removed is None or plan.last_window == 0:
        return plan
    return replace(plan, removed=replace(removed, index=index))


def greenness(day: dt.date) -> float:
    """0 (midwinter) to 1 (mid July): how far the ground is in leaf on ``day``."""
    doy = day.timetuple().tm_yday
    return 0.5 * (1.0 + math.cos(2.0 * math.pi * (doy - GREENEST_DOY) / 365.25))


def vegetated_land(bands: dict[str, np.ndarray]) -> np.ndarray:
    """Land that greens in summer on the 10 m grid, float32 0/1: land (not water) that is not
    bright built-up ground or sand (blue below
    :data:`~pipeline.demo.layout.FARMLAND_BLUE_MAX`)."""
    land = layout.land_mask(bands["B03"], bands["B08"])
    return (land & (bands["B02"] < layout.FARMLAND_BLUE_MAX)).astype(np.float32)


def seasonal(
    bands: dict[str, np.ndarray], land10: np.ndarray, green: float
) -> dict[str, np.ndarray]:
    """Copies of ``bands`` (native grids) with land pixels moved towards summer by ``green``.

    Args:
        bands: Band id -> float32 reflectance of the (January) ground.
        land10: Vegetated land on the 10 m grid (float 0-1 weight: water and bright built-up
            ground stay as they are).
        green: :func:`greenness` of the acquisition.

    Returns:
        Band id -> float32 reflectance: ``x * (1 + green * weight * (factor - 1))``.
    """
    land20 = render.block_mean(land10)
    out = {}
    for band, factor in zip(BANDS, SUMMER_FACTOR, strict=True):
        weight = land10 if NATIVE_GSD[band] == 10 else land20
        scale = 1.0 + np.float32(green * (factor - 1.0)) * weight
        out[band] = (bands[band] * scale).astype(np.float32)
    return out
