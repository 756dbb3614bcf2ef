"""Candidates (found by the model, missing from OSM) and suspect labels (in OSM, not found or
found from their surroundings), each with the evidence that ranks it.

The candidate score uses only what the model and its explanations say, never a truth:
``mean_prob x area / (area + half_area_ha) x focus x (cue_penalty if a cue is confirmed)
x (standing_penalty if the map's timeline shows it standing since the first window)``, with
``focus`` the share of the attribution near the polygon that lies inside it rather than on its
ring (0.5 when the object was not attributed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.config.triage import TriageConfig
from pipeline.triage.evidence import SHARES, focus
from pipeline.triage.objects import BUILT_STANDING

SuspectReason = Literal["not_found", "confirmed_cue", "surroundings", "outline_mismatch"]

#: Reasons from most to least suspicious (the suspect table's order).
REASONS: Final[tuple[SuspectReason, ...]] = (
    "not_found",
    "confirmed_cue",
    "surroundings",
    "outline_mismatch",
)
#: What an analyst is asked to check, per reason.
ACTIONS: Final[dict[str, str]] = {
    "not_found": (
        "check the imagery: is a solar plant built here? If not, the feature may be planned, "
        "under construction or removed (lifecycle tags, or deletion after a survey)"
    ),
    "confirmed_cue": (
        "check the label: the model finds it by a spurious cue nearby (see the audit card)"
    ),
    "surroundings": (
        "check the label's extent: the model's evidence lies around the outline, not inside"
    ),
    "outline_mismatch": (
        "check the outline against the imagery: the model finds a plant here with another shape"
    ),
}
#: OSM tags suggested for a candidate (https://wiki.openstreetmap.org/wiki/Tag:power=plant).
SUGGESTED_TAGS: Final[dict[str, str]] = {
    "power": "plant",
    "plant:source": "solar",
    "plant:method": "photovoltaic",
}
NEUTRAL_FOCUS: Final[float] = 0.5


@dataclass(frozen=True)
class Evidence:
    """What ranks a candidate: ``mean_prob`` (0-1), ``area_ha``, ``focus`` (0-1 or NaN: not
    attributed), ``cue`` (a confirmed cue, "" when none) and ``built`` (``new``, ``standing``
    or "" from the map's timeline, :func:`pipeline.triage.objects.built_class`)."""

    mean_prob: float
    area_ha: float
    focus: float
    cue: str
    built: str = ""


def candidate_score(ev: Evidence, cfg: TriageConfig) -> float:
    """The evidence score of a candidate (0-1; higher = more likely a farm OSM misses)."""
    size = ev.area_ha / (ev.area_ha + cfg.half_area_ha) if ev.area_ha > 0 else 0.0
    attribution = ev.focus if math.isfinite(ev.focus) else NEUTRAL_FOCUS
    penalty = cfg.cue_penalty if ev.cue else 1.0
    standing = cfg.standing_penalty if ev.built == BUILT_STANDING else 1.0
    return float(ev.mean_prob * size * attribution * penalty * standing)


def tag_text(tags: dict[str, str]) -> str:
    """``k=v;k=v`` (how the GeoPackage stores the suggested tags)."""
    return ";".join(f"{k}={v}" for k, v in tags.items())


def candidates(
    objects: gpd.GeoDataFrame,
    label_cover: pd.DataFrame,
    shares: pd.DataFrame,
    cues: pd.Series,
    cfg: TriageConfig,
) -> gpd.GeoDataFrame:
    """Objects that labels cover less than ``overlap_max`` of, ranked by
    :func:`candidate_score` (``rank`` 1 = strongest), with their evidence.

    Args:
        objects: The model's objects (:mod:`pipeline.triage.objects`).
        label_cover: :func:`pipeline.triage.overlap.cover` of the objects by the labels.
        shares: Attribution shares per object
            (:func:`~pipeline.triage.evidence.object_attribution`).
        cues: Confirmed cue per object ("" when none).
        cfg: The triage section.
    """
    keep = label_cover["covered"] < cfg.overlap_max
    frame = objects[keep].copy()
    frame["label_overlap"] = label_cover.loc[keep, "covered"].astype(float)
    for col in SHARES:
        frame[col] = shares.loc[keep, col].astype(float)
    frame["focus"] = [
        focus(i, r) for i, r in zip(frame["share_inside"], frame["share_ring"], strict=True)
    ]
    frame["cue"] = cues[keep].astype(str)
    built = frame["built"] if "built" in frame else pd.Series([""] * len(frame), frame.index)
    frame["built"] = built.fillna("").astype(str)
    frame["score"] = [
        candidate_score(Evidence(p, a, f, c, b), cfg)
        for p, a, f, c, b in zip(
            frame["mean_prob"],
            frame["area_ha"],
            frame["focus"],
            frame["cue"],
            frame["built"],
            strict=True,
        )
    ]
    frame = frame.sort_values(["score", "object_id"], ascending=[False, True])
    frame["rank"] = np.arange(1, len(frame) + 1)
    frame["task_id"] = [f"c{k:04d}" for k in frame["rank"]]
    frame["suggested_tags"] = tag_text(SUGGESTED_TAGS)
    return frame.reset_index(drop=True)


def suspect_reason(
    covered: float, best_iou: float, share_inside: float, cue: str, cfg: TriageConfig, iou: float
) -> SuspectReason | None:
    """Why a label is suspect, or ``None`` when the model finds it from inside.

    Args:
        covered: Share of the label the model's objects cover (0-1).
        best_iou: Its best IoU with one object.
        share_inside: Share of its attribution inside the outline (NaN: not attributed).
        cue: A cue the audit confirmed on it ("" when none).
        cfg: The triage section.
        iou: The IoU from which an object matches a label (``predict.match_iou``).
    """
    if covered < cfg.found_share:
        return "not_found"
    if cue:
        return "confirmed_cue"
    if math.isfinite(share_inside) and share_inside < cfg.surroundings_share:
        return "surroundings"
    if best_iou < iou:
        return "outline_mismatch"
    return None


def _within(
    reason: str, covered: float, best_iou: float, share_inside: float, map_prob: float
) -> float:
    """How strongly a suspect of ``reason`` is suspect within its reason (0-1): a label the
    model does not find is the more suspect the lower the map's probability inside it."""
    if reason == "not_found":
        return 1.0 - map_prob if math.isfinite(map_prob) else 1.0 - covered
    if reason == "outline_mismatch":
        return 1.0 - best_iou
    return 1.0 - share_inside if math.isfinite(share_inside) else 0.5


def suspects(
    labels: gpd.GeoDataFrame,
    object_cover: pd.DataFrame,
    shares: pd.DataFrame,
    cues: pd.Series,
    cfg: TriageConfig,
    match_iou: float,
) -> gpd.GeoDataFrame:
    """Labels the model does not find, or finds only from their surroundings, most suspect
    first, with the evidence and a suggested action (see :data:`ACTIONS`). A ``map_prob``
    column of ``labels`` (mean map probability inside, NaN unknown) orders the not-found."""
    frame = labels.copy()
    frame["covered"] = object_cover["covered"].astype(float)
    frame["best_iou"] = object_cover["best_iou"].astype(float)
    frame["best_object"] = object_cover["best_id"].astype(str)
    for col in SHARES:
        frame[col] = shares[col].astype(float)
    frame["cue"] = cues.astype(str)
    frame["reason"] = [
        suspect_reason(c, b, s, q, cfg, match_iou) or ""
        for c, b, s, q in zip(
            frame["covered"], frame["best_iou"], frame["share_inside"], frame["cue"], strict=True
        )
    ]
    frame = frame[frame["reason"] != ""].copy()
    if "map_prob" not in frame:
        frame["map_prob"] = math.nan
    frame["suspicion"] = [
        len(REASONS) - REASONS.index(r) - 1 + _within(r, c, b, s, p)
        for r, c, b, s, p in zip(
            frame["reason"],
            frame["covered"],
            frame["best_iou"],
            frame["share_inside"],
            frame["map_prob"],
            strict=True,
        )
    ]
    frame["action"] = frame["reason"].map(ACTIONS)
    frame = frame.sort_values(["suspicion", "farm_id"], ascending=[False, True])
    frame["rank"] = np.arange(1, len(frame) + 1)
    frame["task_id"] = [f"s{k:04d}" for k in frame["rank"]]
    return frame.reset_index(drop=True)
