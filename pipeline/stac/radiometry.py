"""Harmonize L2A digital numbers to surface reflectance x 10000, whichever catalog served them.

Since processing baseline 04.00 (25 January 2022) L2A DNs carry a +1000 offset
(``BOA_ADD_OFFSET = -1000``). The rule per item, decided from its collection and properties:

1. ``earthsearch:boa_offset_applied`` true (Earth Search ``sentinel-2-l2a``): the COGs were
   already corrected; subtract nothing. Its ``raster:bands`` offset (-0.1) is ignored: applying
   it makes reflectance 0.1 too low (Element84/earth-search #66, #71).
2. Collection ``sentinel-2-c1-l2a``: subtract ``-offset / scale`` DN from ``raster:bands``
   (1000 for offset -0.1 and scale 0.0001); without ``raster:bands``, fall back to rule 3/4.
3. Baseline >= 04.00 otherwise (the Planetary Computer, un-corrected catalogs): subtract 1000.
4. Baseline < 04.00: subtract nothing.

Output convention: ``0`` is nodata and stays ``0``; every valid pixel is clipped to at least
``1`` after the subtraction, so a dark pixel never turns into nodata. Values are uint16
reflectance x 10000 (``scale`` 0.0001).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import numpy as np
import pystac

from pipeline.errors import FetchError

#: DN offset of baseline 04.00 and later.
BOA_OFFSET_DN: Final[int] = 1000
#: SCL class of vegetation, where a double-corrected blue/green/red turns negative.
SCL_VEGETATION: Final[int] = 4


@dataclass(frozen=True)
class Harmonization:
    """The radiometric rule applied to one item.

    Attributes:
        rule: Short name written into tags, e.g. ``subtract_1000:baseline>=04.00``.
        offset_dn: DN subtracted from every valid pixel (0 or 1000).
        baseline: The item's processing baseline (``"05.09"``).
    """

    rule: str
    offset_dn: int
    baseline: str


def processing_baseline(item: pystac.Item) -> str:
    """``s2:processing_baseline``, else parsed from ``s2:product_uri`` (``_N0509_``).

    Raises:
        FetchError: neither property tells the baseline.
    """
    props = item.properties
    value = props.get("s2:processing_baseline")
    if value:
        return str(value)
    match = re.search(r"_N(\d{2})(\d{2})_", str(props.get("s2:product_uri", "")))
    if match:
        return f"{match.group(1)}.{match.group(2)}"
    raise FetchError(
        f"STAC item {item.id} states no processing baseline (no s2:processing_baseline, no "
        "_Nxxyy_ in s2:product_uri), so its reflectance offset is unknown. Use a catalog whose "
        "Sentinel-2 items carry s2:processing_baseline"
    )


def _baseline_tuple(baseline: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in baseline.split("."))
    except ValueError as err:
        raise FetchError(
            f"processing baseline {baseline!r} is not of the form NN.NN; check the catalog's "
            "s2:processing_baseline values"
        ) from err


def _raster_offset_dn(item: pystac.Item) -> int | None:
    for key in ("red", "B04", "blue", "B02"):
        asset = item.assets.get(key)
        bands = asset.extra_fields.get("raster:bands") if asset else None
        if bands:
            offset = float(bands[0].get("offset", 0.0))
            scale = float(bands[0].get("scale", 1e-4)) or 1e-4
            return round(-offset / scale)
    return None


def harmonization_for(item: pystac.Item) -> Harmonization:
    """The rule for ``item`` (see the module docstring)."""
    baseline = processing_baseline(item)
    new_baseline = _baseline_tuple(baseline) >= (4, 0)
    if item.properties.get("earthsearch:boa_offset_applied") is True:
        return Harmonization("none:boa_offset_applied", 0, baseline)
    if item.collection_id == "sentinel-2-c1-l2a":
        offset = _raster_offset_dn(item)
        if offset is not None:
            return Harmonization(f"subtract_{offset}:c1_raster_offset", offset, baseline)
    if new_baseline:
        return Harmonization(f"subtract_{BOA_OFFSET_DN}:baseline>=04.00", BOA_OFFSET_DN, baseline)
    return Harmonization("none:baseline<04.00", 0, baseline)


def apply_offset(dn: np.ndarray, offset_dn: int) -> np.ndarray:
    """Subtract ``offset_dn`` from valid pixels; nodata ``0`` stays ``0``, valid pixels >= 1.

    Args:
        dn: uint16 digital numbers, any shape.
        offset_dn: DN to subtract (>= 0).

    Returns:
        uint16 array of the same shape: reflectance x 10000.
    """
    valid = dn != 0
    shifted = np.clip(dn.astype(np.int32) - offset_dn, 1, np.iinfo(np.uint16).max)
    return np.where(valid, shifted, 0).astype(np.uint16)


def double_correction_share(visible_dn: np.ndarray, scl: np.ndarray, offset_dn: int) -> float:
    """Share of vegetation pixels whose blue, green or red would be <= 0 after the offset.

    Clear vegetation is dark in the visible (reflectance 0.02-0.08) but never negative; a large
    share at or below zero means the offset was applied to data already corrected.

    Args:
        visible_dn: ``(3, H, W)`` uint16 DNs of B02, B03, B04 before the offset.
        scl: ``(H, W)`` SCL classes on the same grid.
        offset_dn: The offset about to be subtracted.

    Returns:
        Share in [0, 1]; 0 when no offset is subtracted or no vegetation pixel is valid.
    """
    if offset_dn <= 0:
        return 0.0
    veg = (scl == SCL_VEGETATION) & np.all(visible_dn != 0, axis=0)
    n = int(veg.sum())
    if n == 0:
        return 0.0
    low = np.any(visible_dn.astype(np.int32) - offset_dn <= 0, axis=0) & veg
    return float(low.sum()) / n
