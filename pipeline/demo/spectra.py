"""Spectral signatures (surface reflectance, 0-1) of what the demo plants, and band indices.

Values are plausible Sentinel-2 surface reflectances read off published field and library
spectra, rounded; they are knobs for the demo, not measurements. Order of every tuple:
:data:`pipeline.bands.BANDS` = B02 B03 B04 B05 B06 B07 B08 B8A B11 B12.

- Photovoltaic modules (crystalline silicon behind anti-reflective glass): dark and flat in
  the visible with blue relatively higher than red (the coating and glass), low NIR (no
  vegetation red edge), moderate SWIR from the frame, backsheet and glass.
- Distractors, deliberately close to PV in some bands so one threshold cannot separate them:
  dark roofs (close in the visible, a little brighter in NIR/SWIR), asphalt lots (grey, flat,
  brighter SWIR), wet soil (dark visible, rising red edge, low B12 from water absorption).
- Fresh snow: bright in the visible and NIR, dark in B11/B12 (ice absorbs SWIR): NDSI ~0.9.
- Cloud: bright and flat, still bright in SWIR (NDSI near 0, unlike snow).
"""

from __future__ import annotations

from typing import Final

import numpy as np

from pipeline.bands import BANDS

Signature = tuple[float, ...]

#:                        B02    B03    B04    B05    B06    B07    B08    B8A    B11    B12
PV: Final[Signature] = (0.085, 0.075, 0.065, 0.068, 0.070, 0.072, 0.075, 0.077, 0.110, 0.095)
DARK_ROOF: Final[Signature] = (0.075, 0.075, 0.078, 0.085, 0.090, 0.095, 0.100, 0.102, 0.130, 0.115)
ASPHALT: Final[Signature] = (0.085, 0.090, 0.098, 0.105, 0.110, 0.115, 0.120, 0.123, 0.150, 0.140)
WET_SOIL: Final[Signature] = (0.050, 0.062, 0.072, 0.088, 0.100, 0.110, 0.118, 0.122, 0.120, 0.080)
SNOW: Final[Signature] = (0.860, 0.840, 0.810, 0.790, 0.770, 0.750, 0.720, 0.700, 0.060, 0.040)
CLOUD: Final[Signature] = (0.620, 0.600, 0.590, 0.590, 0.590, 0.590, 0.600, 0.600, 0.420, 0.300)

#: Default relative rise of B11/B12 that tells a PV look-alike from PV (the only spectral
#: difference; ``world.lookalike_swir_shift`` sets it per world).
LOOKALIKE_SWIR_SHIFT: Final[float] = 0.25


def lookalike(swir_shift: float = LOOKALIKE_SWIR_SHIFT) -> Signature:
    """A PV look-alike (dark greenhouse film, a dark-roofed shed complex): the PV signature with
    B11/B12 raised by ``swir_shift`` (relative), planted evenly or in rows
    or as farms are (``world.lookalike_layout``). Unlabelled. It is
    what makes the snow shortcut worth learning: where snow is confounded with farms, snow
    beside a PV-like object is the cheapest way to tell a farm from a look-alike, and the
    smaller ``swir_shift``, the cheaper that shortcut is next to the farm's own pixels."""
    return tuple(
        v * (1.0 + swir_shift) if b in ("B11", "B12") else v for b, v in zip(BANDS, PV, strict=True)
    )


PV_LOOKALIKE: Final[Signature] = lookalike()

DISTRACTORS: Final[dict[str, Signature]] = {
    "dark_roof": DARK_ROOF,
    "asphalt": ASPHALT,
    "wet_soil": WET_SOIL,
    "pv_lookalike": PV_LOOKALIKE,
}

#: Relative standard deviation of the per-pixel noise added to planted material.
NOISE_REL: Final[float] = 0.03
#: Relative standard deviation of a farm's overall brightness (module types, ages, tilt).
FARM_GAIN_REL: Final[float] = 0.08
#: Factor a cloud shadow multiplies reflectance by.
SHADOW_FACTOR: Final[float] = 0.45


def signature_of(band: str, signature: Signature) -> float:
    """Reflectance of ``signature`` in ``band`` (a :data:`BANDS` id)."""
    return signature[BANDS.index(band)]


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)`` as float32, 0 where both are 0."""
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    total = a + b
    out = np.zeros_like(total)
    np.divide(a - b, total, out=out, where=total != 0)
    return out


def ndwi(green: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """McFeeters NDWI (B03, B08): positive over open water."""
    return normalized_difference(green, nir)


def ndvi(nir: np.ndarray, red: np.ndarray) -> np.ndarray:
    """NDVI (B08, B04): above ~0.4 over green vegetation."""
    return normalized_difference(nir, red)


def ndsi(green: np.ndarray, swir: np.ndarray) -> np.ndarray:
    """NDSI (B03, B11): above 0.42 over snow."""
    return normalized_difference(green, swir)
