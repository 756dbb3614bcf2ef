"""Scene classification (SCL) and synthetic clouds for the demo items.

The source scene has no SCL (it is Level-1C), so a simple one is derived from the planted
bands at 20 m, in Sen2Cor's classes: 0 no data, 3 cloud shadow, 4 vegetation, 5 not
vegetated, 6 water, 8/9 cloud medium/high probability, 10 thin cirrus, 11 snow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import ndimage

from pipeline.demo.spectra import CLOUD, SHADOW_FACTOR, ndvi, ndwi

#: NDWI above which a 20 m pixel is water, NDVI above which it is vegetation.
WATER_NDWI: Final[float] = 0.0
VEGETATION_NDVI: Final[float] = 0.4
#: Snow share of a 20 m pixel from which SCL says snow.
SNOW_SHARE: Final[float] = 0.5
#: Cloud opacity thresholds: thin cirrus (10), medium (8) and high (9) probability.
CLOUD_ALPHA: Final[tuple[float, float, float]] = (0.08, 0.3, 0.6)
#: How far cloud shadows fall from their clouds (metres) and towards which azimuth (degrees
#: clockwise from north; the January sun stands in the south-south-east at about 157 degrees).
SHADOW_OFFSET_M: Final[float] = 600.0
SHADOW_AZIMUTH_DEG: Final[float] = 337.0
#: Smoothness of the cloud field (Gaussian sigma in pixels of a 1/8-resolution grid) and the
#: strength of its large-scale ramp (clouds gather on one side, leaving some patches clear).
CLOUD_SIGMA: Final[float] = 4.0
CLOUD_RAMP: Final[float] = 2.0


@dataclass(frozen=True)
class Clouds:
    """Cloud opacity (float32 0-1) and shadow (bool) on the 10 m and 20 m grids."""

    alpha10: np.ndarray
    shadow10: np.ndarray
    alpha20: np.ndarray
    shadow20: np.ndarray


def classify(
    blue: np.ndarray, green: np.ndarray, red: np.ndarray, nir: np.ndarray, snow_share: np.ndarray
) -> np.ndarray:
    """Clear-sky SCL (uint8) from 20 m reflectance and the planted snow share."""
    scl = np.full(green.shape, 5, dtype=np.uint8)
    scl[ndvi(nir, red) > VEGETATION_NDVI] = 4
    scl[ndwi(green, nir) > WATER_NDWI] = 6
    scl[snow_share >= SNOW_SHARE] = 11
    scl[blue <= 0] = 0
    return scl


def _shift(mask: np.ndarray, drow: int, dcol: int) -> np.ndarray:
    out = np.zeros_like(mask)
    h, w = mask.shape
    src = mask[max(0, -drow) : h - max(0, drow), max(0, -dcol) : w - max(0, dcol)]
    out[max(0, drow) : max(0, drow) + src.shape[0], max(0, dcol) : max(0, dcol) + src.shape[1]] = (
        src
    )
    return out


def shadow_geometry(sun_azimuth_deg: float, sun_elevation_deg: float) -> tuple[float, float]:
    """``(offset_m, azimuth_deg)`` of cloud shadows for a sun at this azimuth and elevation:
    the clouds of :data:`SHADOW_OFFSET_M` in January (sun at 28.9 degrees) at the same height,
    shadows thrown away from the sun."""
    height = SHADOW_OFFSET_M * math.tan(math.radians(28.9))
    offset = height / math.tan(math.radians(max(5.0, sun_elevation_deg)))
    return offset, (sun_azimuth_deg + 180.0) % 360.0


def cloud_field(
    rng: np.random.Generator,
    shape: tuple[int, int],
    fraction: float,
    shadow: tuple[float, float] = (SHADOW_OFFSET_M, SHADOW_AZIMUTH_DEG),
) -> Clouds:
    """Clouds over about ``fraction`` of a 10 m grid of ``shape`` (even), with shadows
    ``shadow = (offset_m, azimuth_deg)`` away (:func:`shadow_geometry`).

    Smooth noise plus a random large-scale gradient (so clouds gather on one side of the
    scene) is thresholded at its ``1 - fraction`` quantile; opacity ramps up inside.
    """
    h, w = shape
    coarse = ndimage.gaussian_filter(rng.standard_normal((h // 8 + 2, w // 8 + 2)), CLOUD_SIGMA)
    field = ndimage.zoom(coarse, 8, order=1)[:h, :w]
    field = (field - field.mean()) / (field.std() + 1e-9)
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = (xx / w - 0.5) * math.cos(theta) + (yy / h - 0.5) * math.sin(theta)
    field = field + CLOUD_RAMP * ramp
    thr = np.quantile(field, 1.0 - fraction) if fraction > 0 else np.inf
    alpha = np.clip((field - thr) / 1.2 + CLOUD_ALPHA[0] * (field > thr), 0.0, 1.0)
    alpha10 = alpha.astype(np.float32)
    step = shadow[0] / 10.0
    drow = -round(step * math.cos(math.radians(shadow[1])))
    dcol = round(step * math.sin(math.radians(shadow[1])))
    shadow10 = _shift(alpha10 >= CLOUD_ALPHA[1], drow, dcol) & (alpha10 < CLOUD_ALPHA[0])
    alpha20 = alpha10.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    shadow20 = shadow10.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) >= 0.5
    return Clouds(alpha10, shadow10, alpha20.astype(np.float32), shadow20)


def cloudy(
    reflectance: np.ndarray, alpha: np.ndarray, shadow: np.ndarray, band_index: int
) -> np.ndarray:
    """``reflectance`` seen through clouds of opacity ``alpha`` and darkened in ``shadow``."""
    out = reflectance * (1.0 - alpha) + CLOUD[band_index] * alpha
    return np.where(shadow, out * SHADOW_FACTOR, out).astype(np.float32)


def add_clouds(scl: np.ndarray, alpha: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """SCL with cloud shadow (3), thin cirrus (10) and medium/high cloud (8/9) stamped on."""
    out = scl.copy()
    data = scl != 0
    out[data & shadow] = 3
    thin, medium, high = CLOUD_ALPHA
    out[data & (alpha >= thin)] = 10
    out[data & (alpha >= medium)] = 8
    out[data & (alpha >= high)] = 9
    return out


def class_percentages(scl: np.ndarray) -> dict[int, float]:
    """Percentage of data pixels (SCL != 0) in each class 1-11."""
    data = scl[scl != 0]
    n = max(1, data.size)
    counts = np.bincount(data.ravel(), minlength=12)
    return {c: 100.0 * float(counts[c]) / n for c in range(1, 12)}
