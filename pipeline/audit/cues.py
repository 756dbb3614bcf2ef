"""Cue masks: pixels of things that are not solar farms but could fool the model.

Every function takes arrays on one patch grid and returns a :class:`CueMask`. A cue that
cannot be computed (a band is missing, no SCL and no fallback) is a ``CueMask`` with
``mask=None`` and a reason, never an all-false mask: "not computable" is not "no reliance".

Images are stored DN (surface reflectance x 10000), ``(bands, H, W)``, nodata 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.bands import REFLECTANCE_SCALE, SCL_SNOW
from pipeline.config.audit import AuditConfig

#: SCL classes of each built-in cue (Sen2Cor): snow 11; cloud shadow 3, clouds 8/9, cirrus 10.
SCL_CUE_CLASSES: dict[str, frozenset[int]] = {
    "snow": frozenset({SCL_SNOW}),
    "cloud": frozenset({3, 8, 9, 10}),
}


@dataclass(frozen=True)
class CueMask:
    """One cue on one patch.

    Attributes:
        name: Cue name (``snow``, ``cloud``, ``water`` or an analyst cue).
        mask: ``(H, W)`` bool, True on cue pixels; ``None`` when not computable.
        source: How it was computed (``scl``, ``ndsi``, ``brightness``, ``ndwi``, ``analyst``).
        reason: Why it could not be computed (empty when computable).
    """

    name: str
    mask: np.ndarray | None
    source: str
    reason: str = ""

    @property
    def computable(self) -> bool:
        return self.mask is not None

    def share(self, valid: np.ndarray | None = None) -> float:
        """Share of (valid) pixels on the cue; NaN when not computable or nothing is valid."""
        if self.mask is None:
            return float("nan")
        region = np.ones_like(self.mask) if valid is None else valid
        n = int(region.sum())
        return float((self.mask & region).sum() / n) if n else float("nan")


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)`` as float32; NaN where ``a + b == 0`` (nodata)."""
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    total = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (a - b) / total
    out[total == 0] = np.nan
    return out


def ndsi(green: np.ndarray, swir: np.ndarray) -> np.ndarray:
    """Normalized difference snow index ``(B03 - B11) / (B03 + B11)`` (unitless, -1..1)."""
    return normalized_difference(green, swir)


def ndwi(green: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """McFeeters' normalized difference water index ``(B03 - B08) / (B03 + B08)``."""
    return normalized_difference(green, nir)


def valid_pixels(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: pixels where no band is nodata (0)."""
    return np.all(image != 0, axis=0)


def _bands(image: np.ndarray, bands: Sequence[str], need: Sequence[str]) -> dict[str, np.ndarray]:
    missing = [b for b in need if b not in bands]
    if missing:
        raise KeyError(", ".join(missing))
    return {b: image[list(bands).index(b)].astype(np.float32) * REFLECTANCE_SCALE for b in need}


def _missing(name: str, source: str, err: KeyError, have: Sequence[str]) -> CueMask:
    return CueMask(
        name,
        None,
        source,
        f"no SCL and the patch lacks band(s) {err.args[0]} needed by the {source} "
        f"test (it has {', '.join(have) or 'none'}); re-fetch with all 10 bands",
    )


def snow_mask(
    image: np.ndarray, bands: Sequence[str], scl: np.ndarray | None, cfg: AuditConfig
) -> CueMask:
    """Snow: SCL class 11 where the patch has SCL, else NDSI > threshold on bright pixels.

    The no-SCL test is the usual one (Dozier 1989; Sen2Cor's first snow pass): NDSI above
    ``cfg.ndsi_threshold`` with B08 above ``snow_nir_min`` and B03 above ``snow_green_min``.
    """
    if scl is not None:
        return CueMask("snow", np.isin(scl, list(SCL_CUE_CLASSES["snow"])), "scl")
    try:
        b = _bands(image, bands, ("B03", "B08", "B11"))
    except KeyError as err:
        return _missing("snow", "ndsi", err, bands)
    index = ndsi(b["B03"], b["B11"])
    mask = (
        (index > cfg.ndsi_threshold)
        & (b["B08"] > cfg.snow_nir_min)
        & (b["B03"] > cfg.snow_green_min)
    )
    return CueMask("snow", mask & valid_pixels(image), "ndsi")


def cloud_mask(
    image: np.ndarray, bands: Sequence[str], scl: np.ndarray | None, cfg: AuditConfig
) -> CueMask:
    """Cloud and cloud shadow: SCL classes 3/8/9/10, else brightness tests.

    Without SCL: cloud where B02 exceeds ``cloud_blue_min`` and the pixel is not snow by NDSI;
    shadow where B08 is below ``shadow_nir_max`` and the pixel is not water by NDWI.
    """
    if scl is not None:
        return CueMask("cloud", np.isin(scl, list(SCL_CUE_CLASSES["cloud"])), "scl")
    try:
        b = _bands(image, bands, ("B02", "B03", "B08", "B11"))
    except KeyError as err:
        return _missing("cloud", "brightness", err, bands)
    not_snow = ~(ndsi(b["B03"], b["B11"]) > cfg.ndsi_threshold)
    not_water = ~(ndwi(b["B03"], b["B08"]) > cfg.ndwi_threshold)
    cloud = (b["B02"] > cfg.cloud_blue_min) & not_snow
    shadow = (b["B08"] < cfg.shadow_nir_max) & not_water
    return CueMask("cloud", (cloud | shadow) & valid_pixels(image), "brightness")


def water_mask(image: np.ndarray, bands: Sequence[str], cfg: AuditConfig) -> CueMask:
    """Open water: NDWI = (B03 - B08) / (B03 + B08) above ``cfg.ndwi_threshold``."""
    try:
        b = _bands(image, bands, ("B03", "B08"))
    except KeyError as err:
        return CueMask(
            "water",
            None,
            "ndwi",
            f"the patch lacks band(s) {err.args[0]} needed by NDWI; re-fetch with all 10 bands",
        )
    return CueMask(
        "water", (ndwi(b["B03"], b["B08"]) > cfg.ndwi_threshold) & valid_pixels(image), "ndwi"
    )


def compute_cues(
    image: np.ndarray,
    bands: Sequence[str],
    scl: np.ndarray | None,
    cfg: AuditConfig,
    analyst: Mapping[str, np.ndarray | str] | None = None,
) -> dict[str, CueMask]:
    """All configured cues of one patch.

    Args:
        image: ``(len(bands), H, W)`` stored DN.
        bands: Band names of ``image`` in order (a subset of :data:`pipeline.bands.BANDS`).
        scl: ``(H, W)`` SCL classes, or ``None`` when the patch has no SCL.
        cfg: Audit config (cue list and thresholds).
        analyst: Analyst cues already on the grid: name -> ``(H, W)`` bool, or a reason string
            when that cue could not be put on this grid.

    Returns:
        Cue name -> :class:`CueMask`, built-in cues first.
    """
    out: dict[str, CueMask] = {}
    for name in cfg.cues:
        if name == "snow":
            out[name] = snow_mask(image, bands, scl, cfg)
        elif name == "cloud":
            out[name] = cloud_mask(image, bands, scl, cfg)
        else:
            out[name] = water_mask(image, bands, cfg)
    for extra, value in (analyst or {}).items():
        if isinstance(value, str):
            out[extra] = CueMask(extra, None, "analyst", value)
        else:
            out[extra] = CueMask(extra, np.asarray(value, dtype=bool), "analyst")
    return out
