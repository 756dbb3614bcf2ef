"""How much of an attribution map falls on a cue, compared with how much area the cue covers.

The *region* is the patch outside every farm (labelled or predicted) and its buffer: what the
model should not need. Within it, the cue's share of positive attribution divided by its share
of the area is the *enrichment* (1 = the attribution ignores the cue boundary; 5 = the cue
draws five times its fair share). The *effect* is the cue's share of the target's whole positive
attribution (inside farms too), so a tiny attribution mass outside cannot raise a flag alone.

Statistics are ratio-of-sums over *units* (patches, or spatial blocks of one patch) so that
bootstrap confidence intervals resample units. :func:`reliance_rows` measures one attribution
map on every cue of its patch and gathers units per (target, method, cue) in
:class:`TargetStats`; :func:`pooled_row` pools them per farm and :func:`run_level` per run.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from pipeline.audit.cues import CueMask
from pipeline.audit.flags import FLAG_STATISTICS, is_flagged
from pipeline.bands import BAND_GROUPS, BANDS
from pipeline.config.audit import AuditConfig
from pipeline.tables import Columns

#: ``(target kind, target id, method, cue)``: what statistics are pooled by (id ``*``: a run).
StatKey = tuple[str, str, str, str]

#: Columns of a pooled row (:func:`pooled_row`), the rows of ``audit/run_flags.csv``.
POOLED_COLUMNS = (
    Columns(
        ("target", "kind of target (label_farms, predicted_mask, ...)"),
        ("target_id", "the farm's id; * for a whole run"),
        ("method", "attribution method"),
        ("cue", "snow, cloud, water or an analyst cue"),
        ("patch_ids", "patches pooled (JSON list)"),
        ("n_patches", "number of patches pooled"),
        ("computable", "the cue could be computed on those patches"),
        ("cue_present", "cue pixels exist outside the farms there"),
        ("reason", "why the cue is not computable"),
    )
    + FLAG_STATISTICS
)


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


# ------------------------------------------------------------------------ per map and pooled
@dataclass(frozen=True)
class CueReliance:
    """One attribution map measured on one computable cue.

    Attributes:
        units: Sums over the whole patch.
        blocks: Sums over each ``block_px`` block (the units of a one-patch bootstrap).
        shares: Band group -> share of absolute attribution on the cue (:func:`band_shares`).
        flagged: Whether this map alone flags the cue.
    """

    units: UnitSums
    blocks: list[UnitSums]
    shares: dict[str, float]
    flagged: bool


@dataclass
class TargetStats:
    """Per (target kind, target id, method, cue): units for pooling and the patches seen.

    Attributes:
        patch_units: One :class:`UnitSums` per patch (pooled per run).
        block_units: Sums of every block of every patch (pooled per farm).
        patches: Patch ids seen, computable or not (repeats possible).
        swir: SWIR share of the attribution on the cue, per patch.
        computable: False once the cue could not be computed on one of the patches.
        reason: Why it could not (the last reason seen).
    """

    patch_units: list[UnitSums] = field(default_factory=list)
    block_units: list[UnitSums] = field(default_factory=list)
    patches: list[str] = field(default_factory=list)
    swir: list[float] = field(default_factory=list)
    computable: bool = True
    reason: str = ""

    def record(self, patch_id: str, cue: CueMask, result: CueReliance | None) -> None:
        """Add one patch's measurement (``result`` ``None``: the cue is not computable there)."""
        self.patches.append(patch_id)
        if result is None:
            self.computable, self.reason = False, cue.reason
            return
        self.patch_units.append(result.units)
        self.block_units.extend(result.blocks)
        self.swir.append(result.shares["swir"])


def flagged_by(r: Reliance, audit: AuditConfig) -> bool:
    """Whether ``r`` passes the audit's enrichment and effect thresholds."""
    return is_flagged(
        r.enrichment, r.effect, threshold=audit.enrichment_threshold, min_effect=audit.min_effect
    )


def cue_reliance(
    values: np.ndarray,
    aggregate: np.ndarray,
    cue: np.ndarray,
    region: np.ndarray,
    audit: AuditConfig,
) -> CueReliance:
    """Measure one map on one cue.

    Args:
        values: ``(len(BANDS), H, W)`` per-band attribution.
        aggregate: ``(H, W)`` the map reduced over bands (what enrichment is measured on).
        cue: ``(H, W)`` bool cue pixels.
        region: ``(H, W)`` bool pixels outside the farms and their buffer
            (:func:`outside_region`).
        audit: Thresholds and the block size.
    """
    units = unit_sums(aggregate, cue, region)
    return CueReliance(
        units,
        block_sums(aggregate, cue, region, audit.block_px),
        band_shares(values, BANDS, cue & region),
        flagged_by(pooled([units]), audit),
    )


def reliance_row(
    ident: Mapping[str, Any], cue: CueMask, result: CueReliance | None
) -> dict[str, Any]:
    """One row of ``reliance.csv``: ``ident`` (patch_id, method, target, target_id), the cue and
    its statistics (``status`` ``not_computable`` with the reason when ``result`` is ``None``)."""
    base = {**ident, "cue": cue.name, "cue_source": cue.source}
    if result is None:
        return {**base, "status": "not_computable", "reason": cue.reason}
    r = pooled([result.units])
    return {
        **base,
        "status": "ok",
        "reason": "",
        "cue_pixels": result.units.n_cue,
        "region_pixels": result.units.n_region,
        "attr_share": r.attr_share,
        "area_share": r.area_share,
        "enrichment": r.enrichment,
        "effect": r.effect,
        **{f"band_share_{g}": v for g, v in result.shares.items()},
        "flagged": result.flagged,
    }


def reliance_rows(
    values: np.ndarray,
    aggregate: np.ndarray,
    cues: Mapping[str, CueMask],
    region: np.ndarray,
    ident: Mapping[str, Any],
    audit: AuditConfig,
    stats: dict[StatKey, TargetStats],
) -> list[dict[str, Any]]:
    """Rows of ``reliance.csv`` of one attribution map, one per cue of its patch.

    Each cue's measurement is also recorded in ``stats`` (updated in place) under
    ``(target, target_id, method, cue)``.

    Args:
        values, aggregate, region: As in :func:`cue_reliance`.
        cues: The patch's cues.
        ident: ``patch_id``, ``method``, ``target``, ``target_id`` of the map (in that order).
        audit: Thresholds and the block size.
        stats: Per-target statistics gathered so far.
    """
    rows = []
    for cue in cues.values():
        result = (
            None if cue.mask is None else cue_reliance(values, aggregate, cue.mask, region, audit)
        )
        key = (str(ident["target"]), str(ident["target_id"]), str(ident["method"]), cue.name)
        stats.setdefault(key, TargetStats()).record(str(ident["patch_id"]), cue, result)
        rows.append(reliance_row(ident, cue, result))
    return rows


def _mean_swir(swir: list[float]) -> float:
    return float(np.nanmean(swir)) if np.isfinite(swir).any() else np.nan


def pooled_row(
    key: StatKey, st: TargetStats, units: list[UnitSums], audit: AuditConfig, seed: int
) -> dict[str, Any]:
    """One pooled (target, method, cue) statistic with its bootstrap CI and flag.

    Args:
        key: What is pooled.
        st: Its statistics.
        units: The units to pool and resample (``st.block_units`` for a farm,
            ``st.patch_units`` for a run).
        audit: Bootstrap settings and thresholds.
        seed: Seed of the bootstrap.

    Returns:
        A row with :data:`POOLED_COLUMNS` (a cue not computable somewhere gets only the
        identity, ``computable`` False, the reason and NaN enrichment and effect).
    """
    kind, tid, method, cue = key
    base = {
        "target": kind,
        "target_id": tid,
        "method": method,
        "cue": cue,
        "patch_ids": json.dumps(sorted(set(st.patches))),
        "n_patches": len(set(st.patches)),
    }
    if not st.computable:
        return {
            **base,
            "computable": False,
            "cue_present": False,
            "reason": st.reason,
            "enrichment": np.nan,
            "effect": np.nan,
            "flagged": False,
        }
    r = pooled(units)
    lo, hi = bootstrap_enrichment(units, n_boot=audit.bootstrap, level=audit.ci_level, seed=seed)
    return {
        **base,
        "computable": True,
        "cue_present": sum(u.n_cue for u in units) > 0,
        "reason": "",
        "enrichment": r.enrichment,
        "ci_low": lo,
        "ci_high": hi,
        "attr_share": r.attr_share,
        "area_share": r.area_share,
        "effect": r.effect,
        "swir_share": _mean_swir(st.swir),
        "flagged": flagged_by(r, audit),
    }


def farm_level(
    stats: Mapping[StatKey, TargetStats], farm_kinds: Collection[str], audit: AuditConfig, seed: int
) -> list[dict[str, Any]]:
    """Per object target, method and cue: :func:`pooled_row` over the target's blocks (so a
    farm on one patch gets a confidence interval too).

    Args:
        stats: Per-target statistics.
        farm_kinds: Target kinds that are objects (one farm each).
        audit: Bootstrap settings and thresholds.
        seed: Seed of the bootstrap.
    """
    return [
        pooled_row(key, st, st.block_units, audit, seed)
        for key, st in stats.items()
        if key[0] in farm_kinds
    ]


def run_groups(stats: Mapping[StatKey, TargetStats]) -> dict[StatKey, TargetStats]:
    """``stats`` merged over target ids: per (target kind, ``*``, method, cue)."""
    groups: dict[StatKey, TargetStats] = {}
    for (kind, _tid, method, cue), st in stats.items():
        g = groups.setdefault((kind, "*", method, cue), TargetStats())
        g.patch_units.extend(st.patch_units)
        g.patches.extend(st.patches)
        g.swir.extend(st.swir)
        if not st.computable:
            g.reason = st.reason
    return groups


def run_level(stats: Mapping[StatKey, TargetStats], audit: AuditConfig, seed: int) -> pd.DataFrame:
    """Per method x target kind x cue, pooled over every target's patches (CI over patches).

    A group is computable when any of its patches had the cue computed.
    """
    rows = [
        pooled_row(key, g, g.patch_units, audit, seed) | {"computable": bool(g.patch_units)}
        for key, g in sorted(run_groups(stats).items())
    ]
    return pd.DataFrame(rows)
