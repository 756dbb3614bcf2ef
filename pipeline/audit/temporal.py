"""Real-background counterfactual: the cue's pixels as they are on another date.

The inpainting counterfactual (:mod:`pipeline.audit.counterfactual`) replaces a cue with a
guess (the median of the ring around it). A satellite revisits every few days, so the same
ground without the cue is often in the catalog: the fetch stage keeps a patch's other
acquisitions (``fetch.alternates``) with their SCL. Here each of a farm's patches takes the
acquisition that shows most of the cue's pixels clear of that cue and of cloud (:func:`clear_of`),
scaled to the patch's radiometry band by band (:func:`match_gain`), and the cue's pixels are
replaced with those pixels (:func:`temporal_fill`); the few not clear there (at most
``1 - audit.temporal_min_clear``) are inpainted as before. The placebo control is built the same
way on the placebo pixels. A farm any of whose cue-bearing patches lacks such an acquisition gets
no temporal counterfactual: its row says why and is marked ``inpainting_only``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.attribution.targets import Target
from pipeline.audit.counterfactual import (
    Case,
    CounterfactualResult,
    placebo_columns,
    placebo_pixels,
    remove_cue,
    scorer,
    usable_cue,
)
from pipeline.audit.cues import compute_cues, valid_pixels
from pipeline.audit.model_access import ModelAccess
from pipeline.audit.patches import PatchData
from pipeline.audit.reliance import buffer_pixels
from pipeline.bands import BANDS, SCL_NOT_CLEAR
from pipeline.config.audit import AuditConfig
from pipeline.stac.alternates import Alternate, match_gain

#: The temporal columns of a flag row whose temporal counterfactual did not run.
TEMPORAL_NOT_RUN: dict[str, Any] = {
    "counterfactuals": "inpainting_only",
    "temporal_status": "not_run",
    "temporal_reason": "",
}


def clear_of(alt: Alternate, cue: str, audit: AuditConfig) -> np.ndarray:
    """``(H, W)`` bool pixels of ``alt`` with data, clear of cloud by SCL and free of ``cue``.

    A built-in cue is computed on the alternate like on the patch (SCL snow and cloud classes,
    NDWI water); an analyst cue is a place, so it is never clear on another date.
    """
    clear = valid_pixels(alt.image) & ~np.isin(alt.scl, list(SCL_NOT_CLEAR))
    if cue not in ("snow", "cloud", "water"):
        return np.zeros_like(clear)
    there = compute_cues(alt.image, BANDS, alt.scl, audit.model_copy(update={"cues": (cue,)}))
    mask = there[cue].mask
    return clear if mask is None else clear & ~mask


@dataclass(frozen=True)
class Choice:
    """The acquisition chosen to fill one patch's cue pixels.

    Attributes:
        alternate: The acquisition.
        clear: ``(H, W)`` bool pixels of it clear of the cue and of cloud.
        share: Share of the cue's pixels it shows clear (0-1).
    """

    alternate: Alternate
    clear: np.ndarray
    share: float


def choose_alternate(
    p: PatchData, cue: str, pixels: np.ndarray, audit: AuditConfig
) -> Choice | str:
    """The acquisition showing the most of ``pixels`` clear (ties: lower rank), or why none
    qualifies (no other acquisition, or none clear on ``audit.temporal_min_clear`` of them)."""
    if not p.alternates:
        return f"{p.patch_id}: no other acquisition in the window (fetch.alternates)"
    n = max(int(pixels.sum()), 1)
    choices = []
    for alt in p.alternates:
        clear = clear_of(alt, cue, audit)
        choices.append(Choice(alt, clear, float((clear & pixels).sum() / n)))
    best = max(choices, key=lambda c: (c.share, -c.alternate.rank))
    if best.share < audit.temporal_min_clear:
        return (
            f"{p.patch_id}: no acquisition shows the {cue} pixels clear of {cue} and cloud "
            f"(best {best.share:.0%} on {best.alternate.item_id}, needs "
            f"{audit.temporal_min_clear:.0%}: audit.temporal_min_clear)"
        )
    return best


def temporal_fill(
    image: np.ndarray, pixels: np.ndarray, choice: Choice, fallback: np.ndarray, protect: np.ndarray
) -> np.ndarray:
    """``fallback`` (the inpainted image) with ``pixels`` that ``choice`` shows clear taken from
    its acquisition, scaled by :func:`match_gain` on clear background both dates share."""
    alt = choice.alternate.image
    common = valid_pixels(image) & choice.clear & ~pixels & ~protect
    gain = match_gain(image, alt, common)
    out = fallback.copy()
    take = pixels & choice.clear
    out[:, take] = alt[:, take].astype(np.float32) * gain[:, None]
    return out


@dataclass
class TemporalCases:
    """The cases of one farm's temporal counterfactual and its placebo."""

    usable: list[Case] = field(default_factory=list)
    placebos: list[Case] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    dates: list[str] = field(default_factory=list)


def temporal_cases(
    row: Mapping[str, Any],
    cases: Sequence[tuple[PatchData, np.ndarray]],
    bands: tuple[str, ...],
    audit: AuditConfig,
) -> TemporalCases | str:
    """Replace the row's cue (and its placebo) with real background on each patch.

    Returns:
        The cases, or why the temporal counterfactual cannot run (a patch whose cue pixels no
        acquisition shows clear).
    """
    cue_name = str(row["cue"])
    out = TemporalCases()
    for p, tmask in cases:
        cue = usable_cue(p, cue_name, bands)
        if isinstance(cue, str):
            continue
        protect = p.labels | tmask
        pixels = cue & p.valid & ~protect
        image = p.image.astype(np.float32)
        target = Target(str(row["target"]), str(row["target_id"]), torch.from_numpy(tmask))
        if not pixels.any():
            out.usable.append((image, image, target))
            continue
        choice = choose_alternate(p, cue_name, pixels, audit)
        if isinstance(choice, str):
            return choice
        radius = max(1, round(audit.background_radius_m / p.grid.res))
        inpainted = remove_cue(image, cue, p.valid, protect, radius)
        out.usable.append((image, temporal_fill(image, pixels, choice, inpainted, protect), target))
        out.items.append(choice.alternate.item_id)
        out.dates.append(choice.alternate.datetime)
        if audit.placebo_ratio > 0:
            fake = placebo_pixels(p, cue, tmask, buffer_pixels(audit.buffer_m, p.grid.res))
            base = remove_cue(image, fake, p.valid, protect | cue, radius)
            out.placebos.append(
                (image, temporal_fill(image, fake, choice, base, protect | cue), target)
            )
    if not out.usable:
        return "no patch of the farm could be used"
    return out


def temporal_columns(
    row: Mapping[str, Any],
    cases: Sequence[tuple[PatchData, np.ndarray]],
    bands: tuple[str, ...],
    audit: AuditConfig,
    score: Callable[[Sequence[Case]], CounterfactualResult],
) -> dict[str, Any]:
    """The flag row's temporal columns (:data:`pipeline.audit.flags.TEMPORAL_COLUMNS`).

    Args:
        row: A flag row (``target``, ``target_id``, ``cue``).
        cases: The farm's patches with its mask on each.
        bands: The model's bands.
        audit: Thresholds and settings.
        score: Pools and scores cases like the inpainting counterfactual does.
    """
    if not audit.temporal_counterfactual:
        return {**TEMPORAL_NOT_RUN, "temporal_reason": "audit.temporal_counterfactual is off"}
    prepared = temporal_cases(row, cases, bands, audit)
    if isinstance(prepared, str):
        missing = {"temporal_status": "no_clear_acquisition", "temporal_reason": prepared}
        return {**TEMPORAL_NOT_RUN, **missing}
    res = score(prepared.usable)
    placebo = score(prepared.placebos) if prepared.placebos else None
    control = placebo_columns(placebo, res, audit.placebo_ratio)
    return {
        "counterfactuals": "inpainting_and_temporal",
        "temporal_status": "ok",
        "temporal_reason": "",
        "temporal_items": json.dumps(sorted(set(prepared.items))),
        "temporal_dates": json.dumps(sorted(set(prepared.dates))),
        "temporal_logit_change": res.logit_change,
        "temporal_prob_change": res.prob_change,
        "temporal_mask_iou": res.mask_iou,
        "temporal_replaced": res.n_replaced,
        "temporal_placebo_logit_change": control["placebo_logit_change"],
        "temporal_specific": control["specific"],
        "temporal_moved": res.moved and control["specific"] is not False,
    }


def with_temporal(
    row: Mapping[str, Any],
    cases: Sequence[tuple[PatchData, np.ndarray]],
    access: ModelAccess,
    audit: AuditConfig,
    inpainting: Mapping[str, Any],
) -> dict[str, Any]:
    """The inpainting counterfactual's columns ``inpainting`` with the temporal ones and
    ``counterfactuals_agree`` (``None`` unless both ran)."""
    if inpainting.get("cf_status") != "ok":
        return {**inpainting, **TEMPORAL_NOT_RUN, "counterfactuals_agree": None}
    score = scorer(access, audit, cases[0][0].grid.res)
    temporal = temporal_columns(row, cases, access.bands, audit, score)
    agree = (
        bool(temporal["temporal_moved"]) == bool(inpainting["moved"])
        if temporal["temporal_status"] == "ok"
        else None
    )
    return {**inpainting, **temporal, "counterfactuals_agree": agree}
