"""What land a new farm replaced: a land-cover collection where the catalog has one, else
spectral indices of the composite of the window before the farm appeared.

The land-cover collection (``map.landcover_collection``, e.g. ESA WorldCover
``esa-worldcover`` on Planetary Computer) is read through the same STAC code as Sentinel-2:
one search for the area, its ``map`` asset warped (nearest) onto the footprint's grid, the
majority class inside the footprint. WorldCover is one year's map (2020 or 2021), not the
window before the farm: the source column says which item answered.

Without one, each clear footprint pixel of the before-window's composite is classed by
NDVI = (B08 - B04) / (B08 + B04), NDWI = (B03 - B08) / (B03 + B08) and the bare-soil index
BSI = ((B11 + B04) - (B08 + B02)) / ((B11 + B04) + (B08 + B02)) (:func:`classify`): water,
vegetation (dense, in leaf), cropland (partial cover) or bare soil; the footprint takes the
majority. These are spectral classes, not a land-cover product: a winter field is bare soil.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from pipeline.bands import BANDS

#: Spectral classes, by code (0: not classed).
SPECTRAL_CLASSES: Final[dict[int, str]] = {
    1: "water",
    2: "vegetation",
    3: "cropland",
    4: "bare_soil",
}
#: ESA WorldCover classes (the ``map`` asset's values).
WORLDCOVER_CLASSES: Final[dict[int, str]] = {
    10: "tree_cover",
    20: "shrubland",
    30: "grassland",
    40: "cropland",
    50: "built_up",
    60: "bare_sparse_vegetation",
    70: "snow_ice",
    80: "water",
    90: "herbaceous_wetland",
    95: "mangroves",
    100: "moss_lichen",
}
#: Water: NDWI above this (and NDVI below :data:`WATER_NDVI_MAX`).
WATER_NDWI: Final[float] = 0.1
WATER_NDVI_MAX: Final[float] = 0.1
#: Vegetation from this NDVI; cropland from :data:`CROP_NDVI` up to it.
VEGETATION_NDVI: Final[float] = 0.6
CROP_NDVI: Final[float] = 0.25
#: Bare soil wherever BSI exceeds this (or NDVI is below :data:`CROP_NDVI`).
BARE_BSI: Final[float] = 0.1


@dataclass(frozen=True)
class LandCover:
    """The replaced land of one footprint.

    Attributes:
        land_cover: Class name (``""``: unknown).
        share: Share of the classed footprint pixels in that class.
        source: Where it comes from (collection and item, or the spectral window, or why not).
    """

    land_cover: str
    share: float
    source: str


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a + b != 0, (a - b) / (a + b), 0.0)


def indices(image: np.ndarray, bands: Sequence[str] = BANDS) -> dict[str, np.ndarray]:
    """NDVI, NDWI and BSI of a ``(C, H, W)`` reflectance (any scale) image."""
    b = {name: image[i].astype(np.float64) for i, name in enumerate(bands)}
    return {
        "ndvi": _ratio(b["B08"], b["B04"]),
        "ndwi": _ratio(b["B03"], b["B08"]),
        "bsi": _ratio(b["B11"] + b["B04"], b["B08"] + b["B02"]),
    }


def classify(ndvi: np.ndarray, ndwi: np.ndarray, bsi: np.ndarray) -> np.ndarray:
    """Per pixel spectral class code (:data:`SPECTRAL_CLASSES`), water first."""
    out = np.full(ndvi.shape, 4, np.uint8)
    out[(ndvi >= CROP_NDVI) & (bsi <= BARE_BSI)] = 3
    out[(ndvi >= VEGETATION_NDVI) & (bsi <= BARE_BSI)] = 2
    out[(ndwi > WATER_NDWI) & (ndvi < WATER_NDVI_MAX)] = 1
    return out


def majority(codes: np.ndarray, valid: np.ndarray, names: Mapping[int, str]) -> tuple[str, float]:
    """The most frequent named code among ``valid`` pixels and its share (``("", 0)``: none)."""
    values = codes[valid & np.isin(codes, list(names))]
    if not values.size:
        return "", 0.0
    found, counts = np.unique(values, return_counts=True)
    k = int(np.argmax(counts))  # ties: the smallest code
    return names[int(found[k])], float(counts[k] / values.size)


def spectral_cover(image: np.ndarray, usable: np.ndarray, window: str) -> LandCover:
    """Land cover of the ``usable`` (footprint, clear, with data) pixels of a composite.

    Args:
        image: ``(10, H, W)`` composite (:data:`~pipeline.bands.BANDS` order; 0 is nodata).
        usable: ``(H, W)`` bool.
        window: The window the composite is of (recorded in the source).
    """
    usable = usable & (image > 0).all(axis=0)
    idx = indices(image)
    name, share = majority(classify(idx["ndvi"], idx["ndwi"], idx["bsi"]), usable, SPECTRAL_CLASSES)
    if not name:
        return LandCover("", 0.0, f"no clear pixel of the footprint in window {window}")
    return LandCover(name, share, f"spectral indices (NDVI, NDWI, BSI) of window {window}")


def collection_cover(codes: np.ndarray, inside: np.ndarray, source: str) -> LandCover | None:
    """Land cover from a WorldCover-style class raster on the footprint's grid (None: no
    classed pixel, e.g. outside the collection's items)."""
    name, share = majority(codes, inside, WORLDCOVER_CLASSES)
    return LandCover(name, share, source) if name else None
