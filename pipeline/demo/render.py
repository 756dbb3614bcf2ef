"""Pixels of planted objects: supersampled coverage, panel rows, and mixing with the ground.

An object is rasterized on a fine sub-grid (:data:`SUPERSAMPLE_M`), multiplied by its pattern
(rows of panels with gaps of ground), and area-averaged to each band's native grid, so edge
pixels and row gaps mix with the real ground. A pixel becomes
``ground + contrast * fraction * (material - ground)`` with ``material`` the object's signature
times a gain and mild per-pixel noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from rasterio.features import rasterize
from shapely.geometry import Polygon

from pipeline.bands import BANDS, NATIVE_GSD
from pipeline.demo.layout import DistractorPlan, FarmPlan, SnowPlan
from pipeline.demo.pixels import footprint_window, window_transform
from pipeline.demo.spectra import DISTRACTORS, NOISE_REL, PV, SNOW, Signature
from pipeline.geo.raster import Grid

#: Side of the sub-pixels objects are rasterized on (metres).
SUPERSAMPLE_M: Final[float] = 1.0

Pattern = Callable[[np.ndarray, np.ndarray], np.ndarray]
Window = tuple[slice, slice]
#: Coverages already computed, by ``(footprint WKB, pixel size)``: an object planted again in
#: another acquisition (the same footprint, the same panel rows) is not rasterized again.
CoverageCache = dict[tuple[bytes, float], "Coverage | None"]


@dataclass(frozen=True)
class Coverage:
    """Share of each pixel of ``window`` (rows, cols of a grid) an object covers, float32 0-1."""

    window: Window
    fraction: np.ndarray


def panel_rows(cx: float, cy: float, azimuth_deg: float, pitch: float, cover: float) -> Pattern:
    """Rows of panels: 1 on a panel, 0 in the gap, for arrays of x and y (metres).

    Rows run along ``azimuth_deg`` (counter-clockwise from east); a share ``cover`` of every
    ``pitch`` metres across them is panel.
    """
    theta = math.radians(azimuth_deg + 90.0)
    c, s = math.cos(theta), math.sin(theta)

    def pattern(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = (x - cx) * c + (y - cy) * s
        return (np.mod(u, pitch) < cover * pitch).astype(np.float32)

    return pattern


def coverage(
    geom: Polygon, grid: Grid, pattern: Pattern | None = None, sub_m: float = SUPERSAMPLE_M
) -> Coverage | None:
    """Area share of ``geom`` (times ``pattern``) in each pixel of ``grid`` it touches.

    Returns:
        The covered window and its fractions, or ``None`` when ``geom`` misses the grid.
    """
    k = max(1, round(grid.res / sub_m))
    window = footprint_window(geom, grid)
    if window is None:
        return None
    r0, r1, c0, c1 = window
    h, w = r1 - r0, c1 - c0
    t = window_transform(grid, r0, c0, k)
    fine = rasterize([(geom, 1)], out_shape=(h * k, w * k), transform=t, dtype="uint8").astype(
        np.float32
    )
    if pattern is not None:
        xs = t.c + (np.arange(w * k) + 0.5) * t.a
        ys = t.f + (np.arange(h * k) + 0.5) * t.e
        fine *= pattern(xs[None, :], ys[:, None])
    frac = fine.reshape(h, k, w, k).mean(axis=(1, 3))
    return Coverage((slice(r0, r1), slice(c0, c1)), frac.astype(np.float32))


def cached_coverage(
    geom: Polygon, grid: Grid, pattern: Pattern | None, cache: CoverageCache | None
) -> Coverage | None:
    """:func:`coverage`, looked up in (and stored into) ``cache`` when one is given."""
    if cache is None:
        return coverage(geom, grid, pattern)
    key = (geom.wkb, grid.res)
    if key not in cache:
        cache[key] = coverage(geom, grid, pattern)
    return cache[key]


def blend(
    ground: np.ndarray, fraction: np.ndarray, material: np.ndarray, contrast: float = 1.0
) -> np.ndarray:
    """``ground + contrast * fraction * (material - ground)``, clipped to [0.0001, 1.5]."""
    out = ground + contrast * fraction * (material - ground)
    return np.clip(out, 1e-4, 1.5).astype(np.float32)


def material(
    rng: np.random.Generator,
    value: float,
    shape: tuple[int, ...],
    gain: float = 1.0,
    noise_rel: float = NOISE_REL,
) -> np.ndarray:
    """Reflectance ``value * gain`` with relative Gaussian noise ``noise_rel`` per pixel."""
    return (value * gain * (1.0 + noise_rel * rng.standard_normal(shape))).astype(np.float32)


def plant(
    bands: dict[str, np.ndarray],
    grids: dict[int, Grid],
    geom: Polygon,
    signature: Signature,
    rng: np.random.Generator,
    *,
    pattern: Pattern | None = None,
    cover: float = 1.0,
    gain: float = 1.0,
    contrast: float = 1.0,
    cache: CoverageCache | None = None,
) -> dict[int, Coverage]:
    """Mix ``signature`` into every band of ``bands`` over ``geom`` (in place).

    Args:
        bands: Band id -> reflectance on its native grid (modified in place).
        grids: Pixel size (10, 20) -> grid.
        geom: Footprint (grid CRS).
        signature: Reflectance per band of :data:`BANDS`.
        pattern: Sub-pixel pattern (panel rows); ``None`` fills the footprint.
        cover: Share of the footprint the material covers (beyond ``pattern``).
        cache: Coverages to reuse and fill (one footprint always has the same ``pattern``).

    Returns:
        The coverage on each grid (fraction already times ``cover``).
    """
    covs: dict[int, Coverage] = {}
    for res, grid in grids.items():
        cov = cached_coverage(geom, grid, pattern, cache)
        if cov is not None:
            covs[res] = Coverage(cov.window, cov.fraction * np.float32(cover))
    for i, band in enumerate(BANDS):
        cov = covs.get(NATIVE_GSD[band])
        if cov is None:
            continue
        ground = bands[band][cov.window]
        value = material(rng, signature[i], ground.shape, gain)
        bands[band][cov.window] = blend(ground, cov.fraction, value, contrast)
    return covs


def plant_farm(
    bands: dict[str, np.ndarray],
    grids: dict[int, Grid],
    farm: FarmPlan,
    rng: np.random.Generator,
    contrast: float,
    cache: CoverageCache | None = None,
) -> dict[int, Coverage]:
    """Rows of PV panels over ``farm`` (in place); returns the panel coverage per grid."""
    c = farm.geometry.centroid
    rows = panel_rows(c.x, c.y, farm.row_azimuth_deg, farm.row_pitch_m, farm.pv_cover)
    return plant(
        bands,
        grids,
        farm.geometry,
        PV,
        rng,
        pattern=rows,
        gain=farm.gain,
        contrast=contrast,
        cache=cache,
    )


def plant_distractor(
    bands: dict[str, np.ndarray],
    grids: dict[int, Grid],
    item: DistractorPlan,
    rng: np.random.Generator,
    signatures: Mapping[str, Signature] = DISTRACTORS,
    contrast: float = 1.0,
    cache: CoverageCache | None = None,
) -> dict[int, Coverage]:
    """A dark roof, asphalt lot, wet-soil patch or PV look-alike over ``item`` (in place),
    with the signature ``signatures`` gives its kind and the plan's gain, in rows where the
    plan lays it so, mixed with ``contrast`` as farms are."""
    pattern: Pattern | None = None
    cover = item.cover
    if item.rows is not None:  # the cover is then the panel share of each row's pitch
        c = item.geometry.centroid
        pattern = panel_rows(c.x, c.y, item.rows[0], item.rows[1], item.cover)
        cover = 1.0
    return plant(
        bands,
        grids,
        item.geometry,
        signatures[item.kind],
        rng,
        pattern=pattern,
        cover=cover,
        gain=item.gain,
        contrast=contrast,
        cache=cache,
    )


def plant_snow(
    bands: dict[str, np.ndarray], grids: dict[int, Grid], item: SnowPlan, rng: np.random.Generator
) -> dict[int, Coverage]:
    """A snow blob over ``item`` (in place), ``item.depth`` of its pixels' area snow-covered."""
    return plant(bands, grids, item.geometry, SNOW, rng, cover=item.depth)


def accumulate(target: np.ndarray, covs: Sequence[Coverage]) -> np.ndarray:
    """Add coverages into ``target`` (in place, clipped to 1); returns ``target``."""
    for cov in covs:
        target[cov.window] = np.minimum(1.0, target[cov.window] + cov.fraction)
    return target


def to_dn(reflectance: np.ndarray) -> np.ndarray:
    """Reflectance -> uint16 DN (x 10000), at least 1 so that 0 stays nodata."""
    return np.clip(np.rint(reflectance * 10_000.0), 1, 65_535).astype(np.uint16)


def block_mean(a: np.ndarray, k: int = 2) -> np.ndarray:
    """Mean over ``k x k`` blocks (10 m -> 20 m); the shape must divide by ``k``."""
    h, w = a.shape
    return a.reshape(h // k, k, w // k, k).mean(axis=(1, 3)).astype(np.float32)
