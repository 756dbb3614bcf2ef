"""Flags and verdicts: attribution points at a cue, the counterfactual proves it.

Verdicts of a (farm target, cue) row:

- ``not_computable``: the cue could not be computed on the target's patch (reason recorded);
- ``cue_absent``: no cue pixels outside the farms there (nothing to rely on);
- ``not_flagged``: the attribution does not single the cue out;
- ``confirmed``: flagged, and removing the cue moved the prediction;
- ``unconfirmed``: flagged, but the prediction did not move (or no counterfactual ran).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.errors import AuditError

Verdict = Literal["not_computable", "cue_absent", "not_flagged", "confirmed", "unconfirmed"]


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


def finite_or_none(value: float) -> float | None:
    """JSON-friendly float: ``None`` for NaN/inf."""
    return float(value) if value is not None and np.isfinite(value) else None
