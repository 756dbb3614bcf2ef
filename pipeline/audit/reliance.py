"""How much of an attribution map falls on a cue, compared with how much area the cue covers.

The *region* is the patch outside every farm (labelled or predicted) and its buffer: what the
model should not need. Within it, the cue's share of positive attribution divided by its share
of the area is the *enrichment* (1 = the attribution ignores the cue boundary; 5 = the cue
draws five times its fair share). The *effect* is the cue's share of the target's whole positive
attribution (inside farms too), so a tiny attribution mass outside cannot raise a flag alone.

Statistics are ratio-of-sums over *units* (patches, or spatial blocks of one patch) so that
bootstrap confidence intervals resample units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipeline.bands import BAND_GROUPS


@dataclass(frozen=True)
class UnitSums:
    """Sums over one unit (patch or block), the sufficient statistics of :func:`enrichment`.

    Attributes:
        attr_cue: Positive attribution on cue pixels in the region.
        attr_region: Positive attribution on all region pixels.
        attr_total: Positive attribution anywhere (the target's whole positive mass).
        n_cue: Cue pixels in the region.
        n_region: Region pixels.
    """

    attr_cue: float
    attr_region: float
    attr_total: float
    n_cue: int
    n_region: int


@dataclass(frozen=True)
class Reliance:
    """Reliance of one map on one cue.

    Attributes:
        attr_share: Cue share of positive attribution in the region (0-1; NaN if none).
        area_share: Cue share of the region's pixels (0-1; NaN if the region is empty).
        enrichment: ``attr_share / area_share`` (NaN when the cue is absent from the region).
        effect: Cue-in-region share of the whole positive attribution (0-1).
    """

    attr_share: float
    area_share: float
    enrichment: float
    effect: float


def buffer_pixels(buffer_m: float, gsd: float) -> int:
    """Buffer width in whole pixels (rounded up) for a grid of ``gsd`` metres."""
    return int(np.ceil(buffer_m / gsd - 1e-9)) if buffer_m > 0 else 0


def dilate(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """Binary dilation of ``(H, W)`` ``mask`` by a disc of ``radius_px`` pixels."""
    if radius_px <= 0 or not mask.any():
        return mask.copy()
    yy, xx = np.mgrid[-radius_px : radius_px + 1, -radius_px : radius_px + 1]
    disc = (yy**2 + xx**2) <= radius_px**2
    return ndimage.binary_dilation(mask, structure=disc)


def outside_region(farms: np.ndarray, valid: np.ndarray, buffer_px: int) -> np.ndarray:
    """``(H, W)`` bool: valid pixels outside ``farms`` dilated by ``buffer_px``."""
    return valid & ~dilate(farms, buffer_px)


def unit_sums(attr: np.ndarray, cue: np.ndarray, region: np.ndarray) -> UnitSums:
    """Sufficient statistics of one ``(H, W)`` map (NaN treated as 0; negatives dropped)."""
    pos = np.clip(np.nan_to_num(attr, nan=0.0), 0, None)
    in_cue = cue & region
    return UnitSums(
        attr_cue=float(pos[in_cue].sum()),
        attr_region=float(pos[region].sum()),
        attr_total=float(pos.sum()),
        n_cue=int(in_cue.sum()),
        n_region=int(region.sum()),
    )


def block_sums(attr: np.ndarray, cue: np.ndarray, region: np.ndarray, block: int) -> list[UnitSums]:
    """:func:`unit_sums` of each ``block`` x ``block`` tile of the grid (edge tiles smaller).

    ``attr_total`` of each block is that block's positive mass, so the totals still add up.
    """
    height, width = attr.shape
    out = []
    for r in range(0, height, block):
        for c in range(0, width, block):
            win = (slice(r, r + block), slice(c, c + block))
            out.append(unit_sums(attr[win], cue[win], region[win]))
    return out


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def pooled(units: list[UnitSums]) -> Reliance:
    """Ratio-of-sums reliance over ``units`` (one unit: the plain per-map statistic)."""
    a_cue = sum(u.attr_cue for u in units)
    a_reg = sum(u.attr_region for u in units)
    a_tot = sum(u.attr_total for u in units)
    n_cue = sum(u.n_cue for u in units)
    n_reg = sum(u.n_region for u in units)
    attr_share = _ratio(a_cue, a_reg)
    area_share = _ratio(n_cue, n_reg)
    enrich = attr_share / area_share if n_cue > 0 and a_reg > 0 else float("nan")
    return Reliance(attr_share, area_share, enrich, _ratio(a_cue, a_tot) if a_tot > 0 else 0.0)


def reliance(attr: np.ndarray, cue: np.ndarray, region: np.ndarray) -> Reliance:
    """Reliance of one ``(H, W)`` map on one ``(H, W)`` bool cue within ``region``."""
    return pooled([unit_sums(attr, cue, region)])


def bootstrap_enrichment(
    units: list[UnitSums], *, n_boot: int, level: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap CI of pooled enrichment, resampling ``units`` with replacement.

    Resamples whose pooled enrichment is undefined (cue absent from the resampled region) are
    dropped; returns ``(nan, nan)`` when ``n_boot`` is 0, there is one unit or fewer, or no
    resample is defined.

    Args:
        units: Per-unit sums (patches, or blocks of one patch).
        n_boot: Number of resamples.
        level: Two-sided confidence level, e.g. 0.95.
        seed: Seed of the resampling generator (same seed, same interval).
    """
    if n_boot <= 0 or len(units) < 2:
        return float("nan"), float("nan")
    arr = np.array(
        [[u.attr_cue, u.attr_region, u.n_cue, u.n_region] for u in units], dtype=np.float64
    )
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(units), size=(n_boot, len(units)))
    sums = arr[idx].sum(axis=1)  # (n_boot, 4)
    with np.errstate(divide="ignore", invalid="ignore"):
        enrich = (sums[:, 0] / sums[:, 1]) / (sums[:, 2] / sums[:, 3])
    ok = (sums[:, 1] > 0) & (sums[:, 2] > 0) & np.isfinite(enrich)
    if not ok.any():
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(enrich[ok], [alpha, 1 - alpha])
    return float(lo), float(hi)


def band_shares(values: np.ndarray, bands: tuple[str, ...], where: np.ndarray) -> dict[str, float]:
    """Share of absolute per-band attribution by band group on ``where`` pixels.

    Args:
        values: ``(C, H, W)`` per-band attribution, bands named by ``bands``.
        bands: Band names of ``values``.
        where: ``(H, W)`` bool pixels to sum over.

    Returns:
        Group name (``visible``, ``red_edge``, ``nir``, ``swir``) -> share (0-1, NaN when the
        attribution is zero there). SWIR share matters for snow: snow is dark in SWIR.
    """
    mags = np.abs(np.nan_to_num(values[:, where], nan=0.0)).sum(axis=1)  # (C,)
    total = float(mags.sum())
    out = {}
    for group, members in BAND_GROUPS.items():
        idx = [bands.index(b) for b in members if b in bands]
        out[group] = float(mags[idx].sum() / total) if total > 0 else float("nan")
    return out
