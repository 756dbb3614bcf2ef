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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.config.audit import AuditConfig
from pipeline.errors import AuditError
from pipeline.geo.styles import flags_style, write_style
from pipeline.io import atomic_path
from pipeline.tables import Columns

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
FLAG_STATISTICS = Columns(
    (
        "enrichment",
        "the cue's share of the positive attribution outside the farms and their buffer, "
        "divided by its share of that area (1 = no preference; 2 = twice its fair share)",
    ),
    ("ci_low", "lower end of the bootstrap confidence interval of enrichment (audit.ci_level)"),
    ("ci_high", "upper end of that interval"),
    ("attr_share", "the cue's share of the positive attribution outside farms and buffer (0-1)"),
    ("area_share", "the cue's share of the area outside farms and buffer (0-1)"),
    (
        "effect",
        "share of the target's whole positive attribution lying on the cue outside farms and "
        "buffer (0-1)",
    ),
    ("swir_share", "share of the attribution on the cue that lies in the SWIR bands (0-1)"),
    (
        "flagged",
        "enrichment >= audit.enrichment_threshold and effect >= audit.min_effect",
    ),
)

#: Identity of a farm target (first columns of the flag and farm tables).
TARGET_COLUMNS = Columns(
    (
        "target",
        "kind of farm: label_farms (OpenStreetMap), predicted_farms (the model's polygons), "
        "false_positives, missed_farms, mapped_farms (the map stage's farms)",
    ),
    ("target_id", "the farm's id in its layer (farm_id of labels/farms.gpkg, pred_id, ...)"),
)

#: Columns of the flag table (``audit/flags.csv``: one row per farm target and cue), in order.
FLAG_COLUMNS = (
    TARGET_COLUMNS
    + Columns(
        ("cue", "what the model might lean on: snow, cloud, water or an analyst cue"),
        (
            "method",
            "attribution method whose numbers the row shows: the flagging method with the "
            "highest enrichment, else the method with the highest enrichment",
        ),
        ("methods_flagged", "methods that flag the cue (JSON list)"),
        ("verdict", "confirmed, unconfirmed, not_flagged, cue_absent or not_computable"),
    )
    + FLAG_STATISTICS
    + Columns(
        ("score", "the target's score: sum of logits over its frozen mask"),
        ("score_cf", "the same with the cue removed (replaced by local background)"),
        ("score_change", "(score_cf - score) / |score|"),
        ("prob", "mean probability over the farm (0-1)"),
        ("prob_cf", "the same with the cue removed"),
        ("prob_change", "prob_cf - prob"),
        (
            "logit_change",
            "change of the farm's mean log-odds when the cue is removed (nats; -1 means the cue "
            "was worth a factor e in the odds of 'farm')",
        ),
        ("mask_iou", "IoU of the predicted masks near the farm, before and after the removal"),
        ("n_replaced", "cue pixels replaced"),
        ("moved", "the prediction moved (probability, log-odds or mask test) and specifically"),
        ("moved_by", "the tests that fired (JSON list: probability, log_odds, mask_iou)"),
        ("placebo_prob_change", "prob_change when the same blobs are removed elsewhere"),
        (
            "placebo_logit_change",
            "logit_change when the same blobs, turned about the farm's centre onto plain "
            "background, are removed (the control)",
        ),
        ("placebo_replaced", "pixels the placebo replaced (0: no turn fitted, no control)"),
        (
            "specific",
            "|logit_change| >= audit.placebo_ratio x |placebo_logit_change|",
        ),
        (
            "counterfactuals",
            "which counterfactuals ran: inpainting_and_temporal, inpainting_only (no other "
            "acquisition shows the cue's pixels clear; see temporal_reason) or none",
        ),
        (
            "temporal_verdict",
            "the verdict had the real-background (temporal) counterfactual decided it: "
            "confirmed or unconfirmed (empty when it did not run)",
        ),
        (
            "counterfactuals_agree",
            "both counterfactuals ran and agree on whether the prediction moved (empty: not both)",
        ),
        ("temporal_status", "ok, no_clear_acquisition or not_run"),
        ("temporal_reason", "why the temporal counterfactual did not run"),
        (
            "temporal_items",
            "the acquisitions (STAC item ids, JSON list) whose pixels replaced the cue",
        ),
        ("temporal_dates", "their dates (JSON list, ISO 8601 UTC)"),
        (
            "temporal_logit_change",
            "change of the farm's mean log-odds when the cue's pixels are those of that date",
        ),
        ("temporal_prob_change", "the same as a change of mean probability"),
        ("temporal_mask_iou", "IoU of the predicted masks near the farm, before and after"),
        ("temporal_replaced", "pixels replaced (cue pixels, inpainted remainder included)"),
        (
            "temporal_placebo_logit_change",
            "logit change when the placebo pixels are replaced from the same date (the control)",
        ),
        (
            "temporal_specific",
            "|temporal_logit_change| >= audit.placebo_ratio x |temporal_placebo_logit_change|",
        ),
        ("temporal_moved", "the prediction moved on real background, and specifically"),
        ("cf_patch", "patches the counterfactual re-predicted (JSON list, main patch first)"),
        ("cf_status", "ok, skipped or not_run (only flagged rows get a counterfactual)"),
        ("cf_reason", "why the counterfactual was skipped or what it left out"),
        ("computable", "the cue could be computed on the farm's patches"),
        ("cue_present", "cue pixels exist outside the farms there"),
        ("reason", "why the cue is not computable"),
        ("patch_ids", "patches holding part of the farm (JSON list)"),
        ("n_patches", "number of those patches"),
    )
)

#: Columns of each cue's entry in :func:`run_summary`.
SUMMARY_COLUMNS = Columns(
    ("targets", "farm targets"),
    ("cue_present", "farm targets with the cue present outside the farms"),
    ("flagged", "of those, flagged (confirmed or unconfirmed)"),
    ("confirmed", "of those, confirmed by the counterfactual"),
    ("flagged_fraction", "flagged / cue_present"),
    ("confirmed_fraction", "confirmed / cue_present"),
    ("not_computable", "farm targets where the cue could not be computed"),
    (
        "temporal_run",
        "of the counterfactuals run, those also run on real background (another acquisition)",
    ),
    ("temporal_confirmed", "of those, confirmed by the real-background counterfactual"),
    ("counterfactuals_agree", "of those, where both counterfactuals agree"),
)

#: The columns each cue gets in the farm table (``<cue>_<name>``; see :func:`farm_columns`).
CUE_GROUP = Columns(
    ("verdict", "the cue's verdict for this farm"),
    ("method", "attribution method whose numbers are shown"),
    ("enrichment", FLAG_STATISTICS.meanings["enrichment"]),
    ("effect", FLAG_STATISTICS.meanings["effect"]),
    ("logit_change", "change of the farm's mean log-odds when the cue is removed (nats)"),
    ("placebo_logit_change", "the same when the placebo (same blobs, elsewhere) is removed"),
    ("flagged", "attribution flags the cue (a real boolean)"),
    ("confirmed", "flagged and the counterfactual moved the prediction (a real boolean)"),
)

#: The farm table's columns before the cue groups.
FARM_HEAD = TARGET_COLUMNS + Columns(
    ("verdict", "the farm's worst verdict over all cues (confirmed > unconfirmed > ...)"),
    ("worst_cue", "the cue that gave it (empty when no cue is present)"),
    ("n_patches", "patches holding part of the farm"),
    ("patch_ids", "those patches, comma-separated"),
)


def farm_columns(cues: Sequence[str]) -> Columns:
    """Columns of the farm table (``audit/flags.gpkg``): :data:`FARM_HEAD`, then one
    :data:`CUE_GROUP` per cue (``snow_verdict``, ``snow_enrichment``, ...)."""
    groups = [
        Columns(*((f"{cue}_{name}", f"{cue}: {meaning}") for name, meaning in CUE_GROUP.pairs()))
        for cue in cues
    ]
    out = FARM_HEAD
    for group in groups:
        out = out + group
    return out


#: A flag row's counterfactual columns -> their values when no counterfactual ran.
CF_NOT_RUN: dict[str, Any] = {
    "cf_status": "not_run",
    "cf_reason": "",
    "counterfactuals": "none",
    "temporal_status": "not_run",
}

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
            **_temporal_counts(rows),
        }
    return out


def _temporal_counts(rows: pd.DataFrame) -> dict[str, int]:
    """:func:`run_summary`'s counts of the real-background counterfactual."""
    ran = rows[rows.get("temporal_status", pd.Series("", index=rows.index)) == "ok"]
    agree = ran.get("counterfactuals_agree", pd.Series(dtype=object))
    return {
        "temporal_run": len(ran),
        "temporal_confirmed": int(
            (ran.get("temporal_verdict", pd.Series(dtype=object)) == "confirmed").sum()
        ),
        "counterfactuals_agree": int(sum(str(v).lower() == "true" for v in agree)),
    }


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

    ``moved`` counts only when the counterfactual ran (``cf_status`` ``ok``). The verdict is
    the inpainting counterfactual's (as before real backgrounds existed); ``temporal_verdict``
    is the one the real-background counterfactual gives, when it ran.
    """
    moved = cf.get("moved") if cf.get("cf_status") == "ok" else None
    out = {**row, **cf}
    facts = {
        "computable": bool(out["computable"]),
        "cue_present": bool(out["cue_present"]),
        "flagged": bool(out["flagged"]),
    }
    out["verdict"] = verdict(**facts, moved=moved)
    temporal_ran = cf.get("temporal_status") == "ok"
    out["temporal_verdict"] = (
        verdict(**facts, moved=bool(cf.get("temporal_moved"))) if temporal_ran else ""
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


def worst_verdict(verdicts: Iterable[str]) -> Verdict:
    """The most alarming of a farm's verdicts (:data:`SEVERITY`; ``not_computable`` if none)."""
    known = [v for v in verdicts if v in SEVERITY]
    return min(known, key=SEVERITY.index) if known else "not_computable"  # type: ignore[return-value]


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def _patch_list(value: Any) -> list[str]:
    """The patch ids of a flag row's ``patch_ids`` (a JSON list; ``[]`` when missing)."""
    return json.loads(value) if isinstance(value, str) and value.startswith("[") else []


def _cue_group(cue: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`CUE_GROUP` columns of one cue of a farm (empty / NaN / False when absent)."""
    verdict = str(row.get("verdict") or "")
    out: dict[str, Any] = {f"{cue}_verdict": verdict, f"{cue}_method": str(row.get("method") or "")}
    for name in ("enrichment", "effect", "logit_change", "placebo_logit_change"):
        out[f"{cue}_{name}"] = _number(row.get(name))
    out[f"{cue}_flagged"] = verdict in ("confirmed", "unconfirmed")
    out[f"{cue}_confirmed"] = verdict == "confirmed"
    return out


def farm_row(rows: Sequence[Mapping[str, Any]], cues: Sequence[str]) -> dict[str, Any]:
    """One farm of the farm table from its flag rows (one per cue)."""
    by_cue = {str(r["cue"]): r for r in rows}
    verdict = worst_verdict(str(r["verdict"]) for r in rows)
    worst = [r for r in rows if r["verdict"] == verdict]
    present = verdict not in ("cue_absent", "not_computable")
    worst_cue = max(worst, key=lambda r: np.nan_to_num(_number(r.get("enrichment")), nan=-1.0))
    patch_ids = _patch_list(rows[0].get("patch_ids"))
    out: dict[str, Any] = {
        "target": rows[0]["target"],
        "target_id": rows[0]["target_id"],
        "verdict": verdict,
        "worst_cue": str(worst_cue["cue"]) if present else "",
        "n_patches": len(patch_ids),
        "patch_ids": ", ".join(patch_ids),
    }
    for cue in cues:
        out.update(_cue_group(cue, by_cue.get(cue, {})))
    return out


def farm_table(flags: pd.DataFrame) -> pd.DataFrame:
    """The farm table (``audit/flags.gpkg``): one row per farm target with its worst verdict
    and one :data:`CUE_GROUP` per cue (:func:`farm_columns`), from the flag table.

    Numbers are floats (NaN where missing), ``*_flagged`` / ``*_confirmed`` booleans, the rest
    text: nothing is JSON.
    """
    cues = sorted(flags["cue"].astype(str).unique()) if not flags.empty else []
    columns = list(farm_columns(cues))
    rows = [
        farm_row(group.to_dict(orient="records"), cues)
        for _, group in (flags.groupby(["target", "target_id"], sort=True) if cues else [])
    ]
    table = pd.DataFrame(rows, columns=columns)
    for col in columns:
        if col.endswith(("_flagged", "_confirmed")):
            table[col] = table[col].astype(bool)
        elif col == "n_patches":
            table[col] = table[col].astype("int64")
        elif col.endswith(("_enrichment", "_effect", "_logit_change")):
            table[col] = table[col].astype("float64")
    return table


def write_flags_gpkg(
    path: Path,
    farms: pd.DataFrame,
    polygons: dict[tuple[str, str], Any],
    relations: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> Path:
    """Write the farm table with each farm's polygon (EPSG:4326; layer ``flags``) atomically,
    and its QGIS style (colour by verdict) beside it.

    A farm without a polygon gets an empty geometry. ``relations`` (mapped farms: ``in_osm``,
    ``osm_id``) adds those columns when some farm has one: text ``true``/``false`` and the OSM
    id, empty for farms without a relation.
    """
    keys = list(zip(farms["target"].astype(str), farms["target_id"].astype(str), strict=True))
    geoms = [polygons.get(k) for k in keys]
    table = farms.copy()
    if relations and any(k in relations for k in keys):
        rel = [relations.get(k, {}) for k in keys]
        table["in_osm"] = [str(r["in_osm"]).lower() if "in_osm" in r else "" for r in rel]
        table["osm_id"] = [str(r.get("osm_id") or "") for r in rel]
    gdf = gpd.GeoDataFrame(table, geometry=geoms, crs="EPSG:4326")
    with atomic_path(path) as tmp:
        gdf.to_file(tmp, layer="flags", driver="GPKG")
    write_style(path, flags_style())
    return path


def _g(value: float, digits: int = 2) -> str:
    """A number for a sentence: ``47x``-style magnitudes keep ``digits`` significant figures."""
    if not math.isfinite(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _flag_words(row: Mapping[str, Any], audit: AuditConfig) -> str:
    enrichment, effect = _number(row.get("enrichment")), _number(row.get("effect"))
    method = str(row.get("method") or "")
    e_ok = math.isfinite(enrichment) and enrichment >= audit.enrichment_threshold
    f_ok = math.isfinite(effect) and effect >= audit.min_effect
    e_op, f_op = (">=" if e_ok else "<"), (">=" if f_ok else "<")
    rule = (
        f"enrichment {_g(enrichment)}x {e_op} {_g(audit.enrichment_threshold)} and effect "
        f"{_g(effect)} {f_op} {_g(audit.min_effect)} ({method})"
    )
    return ("flagged: " if e_ok and f_ok else "not flagged: ") + rule


def _moved_words(row: Mapping[str, Any], audit: AuditConfig) -> list[str]:
    cue = str(row.get("cue"))
    dz, dp = _number(row.get("logit_change")), _number(row.get("prob_change"))
    iou = _number(row.get("mask_iou"))
    fell = "fell" if dz < 0 else "rose"
    parts = []
    if math.isfinite(dz):
        op = ">=" if abs(dz) >= audit.counterfactual_logit else "<"
        parts.append(
            f"log-odds {fell} {_g(abs(dz))} when the {cue} was removed "
            f"(|change| {op} {_g(audit.counterfactual_logit)})"
        )
    if math.isfinite(dp):
        op = ">=" if abs(dp) >= audit.counterfactual_threshold else "<"
        parts.append(
            f"probability {_g(_number(row.get('prob')))} -> {_g(_number(row.get('prob_cf')))} "
            f"(|change| {op} {_g(audit.counterfactual_threshold)})"
        )
    if "mask_iou" in str(row.get("moved_by") or ""):
        parts.append(f"predicted mask IoU {_g(iou)} <= {_g(audit.counterfactual_iou)}")
    return parts


def _placebo_words(row: Mapping[str, Any], audit: AuditConfig) -> str:
    if not int(_number(row.get("placebo_replaced")) or 0):
        return "no placebo fitted beside the farm, so the control was not applied"
    pz = _number(row.get("placebo_logit_change"))
    specific = str(row.get("specific")).lower() == "true"
    verb = "only " if specific else ""
    return (
        f"the placebo (same blobs turned onto plain background) moved the log-odds {verb}"
        f"{_g(abs(pz))}"
        + (
            ""
            if specific
            else f", too close to the cue's effect (needs {_g(audit.placebo_ratio)}x)"
        )
    )


def verdict_in_words(row: Mapping[str, Any], audit: AuditConfig) -> str:
    """The rule that produced a flag row's verdict, with its numbers, as one sentence.

    E.g. ``flagged: enrichment 47x >= 2 and effect 0.26 >= 0.05 (integrated_gradients);
    confirmed: log-odds fell 5.4 when the snow was removed (|change| >= 1); the placebo ...
    moved the log-odds only 0.0001``.

    Args:
        row: A row of the flag table (:data:`FLAG_COLUMNS`).
        audit: The thresholds the audit ran with.
    """
    cue, verdict = str(row.get("cue")), str(row.get("verdict"))
    if verdict == "not_computable":
        return f"{cue} could not be computed: {row.get('reason') or 'no reason recorded'}"
    if verdict == "cue_absent":
        return f"no {cue} outside the farm on its patches, nothing to lean on"
    words = _flag_words(row, audit)
    if verdict == "not_flagged":
        return words
    if str(row.get("cf_status")) != "ok":
        reason = row.get("cf_reason") or "no counterfactual ran"
        return f"{words}; not confirmed: {reason}"
    moved = "; ".join(_moved_words(row, audit))
    placebo = _placebo_words(row, audit)
    head = "confirmed" if verdict == "confirmed" else "not confirmed"
    return f"{words}; {head}: {moved}; {placebo}; {_temporal_words(row)}"


def _temporal_words(row: Mapping[str, Any]) -> str:
    """What the real-background counterfactual found, or why there was none."""
    if str(row.get("temporal_status")) != "ok":
        reason = str(row.get("temporal_reason") or "no other acquisition")
        return f"inpainting counterfactual only ({reason})"
    dz = _number(row.get("temporal_logit_change"))
    items = ", ".join(_patch_list(row.get("temporal_items")))
    agree = str(row.get("counterfactuals_agree")).lower() == "true"
    return (
        f"on real background ({items}) the log-odds changed {_g(dz)}: "
        f"{row.get('temporal_verdict')}, {'agreeing' if agree else 'disagreeing'} with inpainting"
    )


def finite_or_none(value: float) -> float | None:
    """JSON-friendly float: ``None`` for NaN/inf."""
    return float(value) if value is not None and np.isfinite(value) else None
