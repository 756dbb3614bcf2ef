"""Flags and verdicts: attribution points at a cue, the counterfactual proves it.

Verdicts of a (farm target, cue) row:

- ``not_computable``: the cue could not be computed on the target's patch (reason recorded);
- ``cue_absent``: no cue pixels outside the farms there (nothing to rely on);
- ``not_flagged``: the attribution does not single the cue out;
- ``confirmed``: flagged, and removing the cue moved the prediction;
- ``unconfirmed``: flagged, but the prediction did not move (or no counterfactual ran).

The flag table (``audit/flags.csv``, :data:`FLAG_COLUMNS`) has one row per farm target and cue:
the method that flags the cue most (:func:`best_method`), the methods that flag it, the
counterfactual's columns and the verdict (:func:`flag_table`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.errors import AuditError
from pipeline.io import atomic_path

Verdict = Literal["not_computable", "cue_absent", "not_flagged", "confirmed", "unconfirmed"]

#: Verdicts from most to least alarming.
SEVERITY: tuple[Verdict, ...] = (
    "confirmed",
    "unconfirmed",
    "not_flagged",
    "cue_absent",
    "not_computable",
)

#: The pooled statistics a flag is decided on and reported with, in table order (columns of
#: the flag table and of the pooled rows, ``pipeline.audit.reliance.POOLED_COLUMNS``).
FLAG_STATISTICS: tuple[str, ...] = (
    "enrichment",
    "ci_low",
    "ci_high",
    "attr_share",
    "area_share",
    "effect",
    "swir_share",
    "flagged",
)

#: Columns of the flag table (``audit/flags.csv``, ``audit/flags.gpkg``), in order.
FLAG_COLUMNS: tuple[str, ...] = (
    "target",
    "target_id",
    "cue",
    "method",
    "methods_flagged",
    "verdict",
    *FLAG_STATISTICS,
    "score",
    "score_cf",
    "score_change",
    "prob",
    "prob_cf",
    "prob_change",
    "logit_change",
    "mask_iou",
    "n_replaced",
    "moved",
    "moved_by",
    "placebo_prob_change",
    "placebo_logit_change",
    "placebo_replaced",
    "specific",
    "cf_patch",
    "cf_status",
    "cf_reason",
    "computable",
    "cue_present",
    "reason",
    "patch_ids",
    "n_patches",
)

#: Columns of each cue's entry in :func:`run_summary`.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "targets",
    "cue_present",
    "flagged",
    "confirmed",
    "flagged_fraction",
    "confirmed_fraction",
    "not_computable",
)

#: A flag row's counterfactual columns -> their values when no counterfactual ran.
CF_NOT_RUN: dict[str, Any] = {"cf_status": "not_run", "cf_reason": ""}

#: ``flag row -> its counterfactual columns`` (``cf_status``, ``moved``, ...).
CounterfactualFn = Callable[[dict[str, Any]], dict[str, Any]]


def is_flagged(enrichment: float, effect: float, *, threshold: float, min_effect: float) -> bool:
    """Enrichment at or above ``threshold`` and effect at or above ``min_effect`` (NaN: no)."""
    if not (math.isfinite(enrichment) and math.isfinite(effect)):
        return False
    return enrichment >= threshold and effect >= min_effect


def verdict(*, computable: bool, cue_present: bool, flagged: bool, moved: bool | None) -> Verdict:
    """The verdict of one row (``moved`` is ``None`` when no counterfactual ran)."""
    if not computable:
        return "not_computable"
    if not cue_present:
        return "cue_absent"
    if not flagged:
        return "not_flagged"
    return "confirmed" if moved else "unconfirmed"


def check_thresholds(enrichment_threshold: float, min_effect: float, cf_threshold: float) -> None:
    """Raise :class:`AuditError` for thresholds that cannot flag anything sensibly.

    The config validates ranges; this catches values passed programmatically.
    """
    if not (math.isfinite(enrichment_threshold) and enrichment_threshold > 0):
        raise AuditError(
            f"audit.enrichment_threshold = {enrichment_threshold} is out of range; "
            "it must be a positive number (2.0 flags a cue drawing twice its share)"
        )
    if not 0 <= min_effect <= 1:
        raise AuditError(
            f"audit.min_effect = {min_effect} is out of range; it is a share of "
            "attribution in [0, 1] (e.g. 0.05)"
        )
    if not 0 < cf_threshold <= 1:
        raise AuditError(
            f"audit.counterfactual_threshold = {cf_threshold} is out of range; it "
            "is a change of mean probability in (0, 1] (e.g. 0.1)"
        )


def best_method(rows: pd.DataFrame) -> pd.Series:
    """The row to report for one (target, cue): the flagged method with the highest enrichment,
    else the method with the highest enrichment, else the first row."""
    flagged = rows[rows["flagged"]]
    pool = flagged if len(flagged) else rows
    enrich = pool["enrichment"].astype(float)
    if enrich.notna().any():
        return pool.loc[enrich.idxmax()]
    return pool.iloc[0]


def run_summary(flags: pd.DataFrame) -> dict[str, dict[str, float | int | None]]:
    """Per cue: targets, flagged, confirmed counts and fractions (of rows with the cue present;
    ``None`` when the cue is present nowhere)."""
    out: dict[str, dict[str, float | int | None]] = {}
    for cue, rows in flags.groupby("cue", sort=True):
        present = rows[~rows["verdict"].isin(["not_computable", "cue_absent"])]
        n = len(present)
        n_flag = int((present["verdict"].isin(["confirmed", "unconfirmed"])).sum())
        n_conf = int((present["verdict"] == "confirmed").sum())
        out[str(cue)] = {
            "targets": len(rows),
            "cue_present": n,
            "flagged": n_flag,
            "confirmed": n_conf,
            "flagged_fraction": n_flag / n if n else None,
            "confirmed_fraction": n_conf / n if n else None,
            "not_computable": int((rows["verdict"] == "not_computable").sum()),
        }
    return out


def best_rows(per_method: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (target, target_id, cue) of the per-method pooled rows, sorted by that key.

    Each is the :func:`best_method` row with ``methods_flagged``: the JSON list of the methods
    that flag the cue (sorted).
    """
    if not per_method:
        return []
    frame = pd.DataFrame(per_method)
    out = []
    for _key, grp in frame.groupby(["target", "target_id", "cue"], sort=True):
        best = best_method(grp).to_dict()
        best["methods_flagged"] = json.dumps(sorted(grp.loc[grp["flagged"], "method"]))
        out.append(best)
    return out


def wants_counterfactual(row: dict[str, Any], scope: str) -> bool:
    """Whether a flag row gets a counterfactual: its cue is present, and it is flagged or
    ``scope`` (``audit.counterfactual_scope``) is ``all``."""
    return bool(row["computable"] and row["cue_present"] and (row["flagged"] or scope == "all"))


def with_verdict(row: dict[str, Any], cf: dict[str, Any]) -> dict[str, Any]:
    """``row`` with the counterfactual columns ``cf`` and the :func:`verdict`.

    ``moved`` counts only when the counterfactual ran (``cf_status`` ``ok``).
    """
    moved = cf.get("moved") if cf.get("cf_status") == "ok" else None
    out = {**row, **cf}
    out["verdict"] = verdict(
        computable=bool(out["computable"]),
        cue_present=bool(out["cue_present"]),
        flagged=bool(out["flagged"]),
        moved=moved,
    )
    return out


def flag_table(
    per_method: Sequence[dict[str, Any]], counterfactual: CounterfactualFn, *, scope: str
) -> pd.DataFrame:
    """The flag table: one row per farm target and cue with :data:`FLAG_COLUMNS`.

    Args:
        per_method: Pooled rows per (farm target, method, cue)
            (:func:`pipeline.audit.reliance.pooled_row`).
        counterfactual: Runs the counterfactual of a flag row (called only for the rows
            :func:`wants_counterfactual` selects, in table order).
        scope: ``audit.counterfactual_scope`` (``flagged`` or ``all``).
    """
    rows = [
        with_verdict(row, counterfactual(row) if wants_counterfactual(row, scope) else CF_NOT_RUN)
        for row in best_rows(per_method)
    ]
    return pd.DataFrame(rows).reindex(columns=list(FLAG_COLUMNS))


def write_flags_gpkg(path: Path, flags: pd.DataFrame, polygons: dict[tuple[str, str], Any]) -> Path:
    """Write the flag table with each target's polygon (EPSG:4326; layer ``flags``) atomically.

    Object columns are written as text (GeoPackage has no mixed-type columns); a target
    without a polygon gets an empty geometry.
    """
    geoms = [polygons.get((k, t)) for k, t in zip(flags["target"], flags["target_id"], strict=True)]
    gdf = gpd.GeoDataFrame(flags.copy(), geometry=geoms, crs="EPSG:4326")
    for col in gdf.columns:
        if col != "geometry" and gdf[col].dtype == object:
            gdf[col] = gdf[col].astype(str)
    with atomic_path(path) as tmp:
        gdf.to_file(tmp, layer="flags", driver="GPKG")
    return path


def finite_or_none(value: float) -> float | None:
    """JSON-friendly float: ``None`` for NaN/inf."""
    return float(value) if value is not None and np.isfinite(value) else None
