"""The world's acquisitions as pixels: each item's bands, SCL and cloud cover.

- ``clear`` (2016-01-12): the real scene with distractors, farms and snow planted
  (:func:`render_world`).
- ``cloudy`` (2016-01-02): the same pixels under clouds and their shadows, with a per-band gain.
- ``snowfree`` (2016-01-09): the clear scene's pixels as they were before the snow was planted
  (the same ground, distractors and farms, pixel for pixel), times a per-band gain of the same
  size as the cloudy item's; its SCL is clear and has no snow.
- ``history``: the real ground greened for its season (:func:`pipeline.demo.history.seasonal`),
  with the distractors and the farms standing in its window planted afresh (their own noise),
  no snow, a per-band gain, and clouds where the acquisition has them.

Pure array functions; :mod:`pipeline.demo.stac` writes the items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from pipeline.bands import BANDS, NATIVE_GSD
from pipeline.config import WorldConfig
from pipeline.demo import history, layout, render, scl, spectra
from pipeline.demo.calendar import Acquisition
from pipeline.demo.source import Scene
from pipeline.demo.stac import ItemData

#: Radiometric difference between two acquisitions (relative std of a per-band gain).
ITEM_GAIN_REL: Final[float] = 0.01

Bands = dict[str, np.ndarray]


@dataclass(frozen=True)
class Rendered:
    """Planted reflectance per band (native grids), the snow share on both grids and, when
    asked for, the bands as they were before the snow was planted."""

    bands: Bands
    snow10: np.ndarray
    snow20: np.ndarray
    snowfree: Bands | None = None


@dataclass(frozen=True)
class Planting:
    """What is planted in an acquisition: distractors, farms (their footprints of that
    window) and snow, all EPSG:32618, and the coverages computed so far (shared between
    plantings of one world)."""

    distractors: Sequence[layout.DistractorPlan]
    farms: Sequence[layout.FarmPlan]
    snow: Sequence[layout.SnowPlan] = ()
    cache: render.CoverageCache = field(default_factory=dict)


def plant_objects(
    bands: Bands,
    scene: Scene,
    planting: Planting,
    rng: np.random.Generator,
    wcfg: WorldConfig,
) -> None:
    """Plant the distractors, then the farms, into ``bands`` (in place); their coverages are
    kept in ``planting.cache`` for the next acquisition."""
    grids = {10: scene.grid10, 20: scene.grid20}
    signatures = {
        **spectra.DISTRACTORS,
        "pv_lookalike": spectra.lookalike(wcfg.lookalike_swir_shift),
    }
    for d in planting.distractors:
        contrast = wcfg.signature_contrast if d.kind == "pv_lookalike" else 1.0
        render.plant_distractor(bands, grids, d, rng, signatures, contrast, planting.cache)
    for f in planting.farms:
        render.plant_farm(bands, grids, f, rng, wcfg.signature_contrast, planting.cache)


def render_world(
    scene: Scene,
    planting: Planting,
    rng: np.random.Generator,
    wcfg: WorldConfig,
    keep_snowfree: bool = False,
) -> Rendered:
    """Plant distractors, then farms, then snow into a copy of the scene's bands; with
    ``keep_snowfree``, keep a copy of the bands from before the snow."""
    bands = {k: v.copy() for k, v in scene.bands.items()}
    plant_objects(bands, scene, planting, rng, wcfg)
    snowfree = {k: v.copy() for k, v in bands.items()} if keep_snowfree else None
    grids = {10: scene.grid10, 20: scene.grid20}
    snow10 = np.zeros(scene.grid10.shape, np.float32)
    snow20 = np.zeros(scene.grid20.shape, np.float32)
    for s in planting.snow:
        covs = render.plant_snow(bands, grids, s, rng)
        render.accumulate(snow10, [covs[10]] if 10 in covs else [])
        render.accumulate(snow20, [covs[20]] if 20 in covs else [])
    return Rendered(bands, snow10, snow20, snowfree)


def clear_scl(bands: Bands, snow20: np.ndarray | None = None) -> np.ndarray:
    """SCL at 20 m of clear-sky ``bands`` with a planted snow share ``snow20`` (none if
    ``None``)."""
    b = {k: render.block_mean(bands[k]) for k in ("B02", "B03", "B04", "B08")}
    snow = np.zeros_like(b["B02"]) if snow20 is None else snow20
    return scl.classify(b["B02"], b["B03"], b["B04"], b["B08"], snow)


def to_item(acq: Acquisition, bands: Bands, scl_map: np.ndarray) -> ItemData:
    """An item of reflectance ``bands`` and its SCL; cloud cover from the SCL."""
    pct = scl.class_percentages(scl_map)
    return ItemData(
        acq,
        {k: render.to_dn(v) for k, v in bands.items()},
        scl_map,
        cloud_cover=pct[8] + pct[9] + pct[10],
        percentages=pct,
    )


def draw_gains(rng: np.random.Generator) -> np.ndarray:
    """A per-band gain (:data:`ITEM_GAIN_REL` relative std), :data:`BANDS` order."""
    return 1.0 + ITEM_GAIN_REL * rng.standard_normal(len(BANDS))


def under_clouds(
    acq: Acquisition,
    bands: Bands,
    base_scl: np.ndarray,
    rng: np.random.Generator,
    shadow: tuple[float, float] = (scl.SHADOW_OFFSET_M, scl.SHADOW_AZIMUTH_DEG),
) -> ItemData:
    """``bands`` times a per-band gain, under clouds over ``acq.cloud_fraction`` of the scene
    and their shadows (``shadow`` = ``(offset_m, azimuth_deg)``); SCL marks both."""
    shape = bands["B02"].shape
    clouds = scl.cloud_field(rng, shape, acq.cloud_fraction, shadow)
    gains = draw_gains(rng)
    out = {}
    for i, band in enumerate(BANDS):
        fine = NATIVE_GSD[band] == 10
        alpha = clouds.alpha10 if fine else clouds.alpha20
        dark = clouds.shadow10 if fine else clouds.shadow20
        out[band] = scl.cloudy(bands[band] * np.float32(gains[i]), alpha, dark, i)
    return to_item(acq, out, scl.add_clouds(base_scl, clouds.alpha20, clouds.shadow20))


def gained(bands: Bands, gains: np.ndarray) -> Bands:
    """``bands`` times a per-band gain (:data:`BANDS` order)."""
    pairs = zip(BANDS, gains, strict=True)
    return {b: (bands[b] * np.float32(g)).astype(np.float32) for b, g in pairs}


def snowfree_item(acq: Acquisition, rendered: Rendered, rng: np.random.Generator) -> ItemData:
    """The twin: the bands before the snow, times a per-band gain, with a clear SCL."""
    if rendered.snowfree is None:
        raise ValueError("render_world was not asked to keep the snow-free bands")
    bands = gained(rendered.snowfree, draw_gains(rng))
    return to_item(acq, bands, clear_scl(bands))


def history_item(
    acq: Acquisition,
    scene: Scene,
    planting: Planting,
    rng: np.random.Generator,
    wcfg: WorldConfig,
) -> ItemData:
    """An earlier acquisition: the ground greened for its day, ``planting`` (the farms
    standing then; no snow) planted afresh, a per-band gain, clouds if it has them."""
    land = history.vegetated_land(scene.bands)
    bands = history.seasonal(scene.bands, land, history.greenness(acq.when.date()))
    plant_objects(bands, scene, planting, rng, wcfg)
    if acq.cloud_fraction > 0:
        return under_clouds(acq, bands, clear_scl(bands), rng, scl.shadow_geometry(*acq.sun))
    bands = gained(bands, draw_gains(rng))
    return to_item(acq, bands, clear_scl(bands))


@dataclass(frozen=True)
class ItemStreams:
    """The generators of the items: the cloudy item's clouds, the twin's gain, and one parent
    of the history acquisitions (each gets its own child, in time order)."""

    clouds: np.random.Generator
    snowfree: np.random.Generator
    history: np.random.Generator


def make_items(
    acquisitions: Sequence[Acquisition],
    scene: Scene,
    rendered: Rendered,
    plantings: dict[int, Planting],
    wcfg: WorldConfig,
    streams: ItemStreams,
) -> list[ItemData]:
    """Every acquisition's item, in the order of ``acquisitions``.

    Args:
        acquisitions: :func:`pipeline.demo.calendar.acquisitions`.
        scene: The real scene.
        rendered: The January pixels (:func:`render_world`).
        plantings: Window -> what stands in it (history windows only).
        wcfg: The world section.
        streams: The generators.
    """
    base_scl = clear_scl(rendered.bands, rendered.snow20)
    history_rngs = iter(streams.history.spawn(sum(a.role == "history" for a in acquisitions)))
    items = []
    for acq in acquisitions:
        if acq.role == "clear":
            items.append(to_item(acq, rendered.bands, base_scl))
        elif acq.role == "cloudy":
            items.append(under_clouds(acq, rendered.bands, base_scl, streams.clouds))
        elif acq.role == "snowfree":
            items.append(snowfree_item(acq, rendered, streams.snowfree))
        else:
            items.append(history_item(acq, scene, plantings[acq.window], next(history_rngs), wcfg))
    return items
