"""Counterfactual proof: remove the cue, re-predict, and see whether the prediction moves.

Attribution points at a cue; the counterfactual proves reliance. Each connected blob of the cue
is replaced, band by band, with the median of the non-cue, non-farm valid pixels in a ring
around it (plausible local background, in stored DN). The target's frozen mask is re-scored.
The placebo control removes the same blobs turned onto ordinary background
(:func:`placebo_mask`). :func:`run_counterfactual` does both for one farm and cue, pooled over
the farm's patches, and returns the flag table's counterfactual columns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from pipeline.attribution.targets import Target
from pipeline.audit.model_access import ModelAccess
from pipeline.audit.patches import PatchData
from pipeline.audit.reliance import buffer_pixels, dilate
from pipeline.config.audit import AuditConfig

#: Fewer predicted pixels near the target than this and the IoU is too noisy to confirm alone.
MIN_IOU_PIXELS = 25

#: Stored DN (1, C, H, W) float tensor -> model input (normalized) tensor.
Normalizer = Callable[[np.ndarray], torch.Tensor]


@dataclass(frozen=True)
class CounterfactualResult:
    """Effect of removing a cue on one target.

    Attributes:
        score: Target score (the attribution's scalar: sum of logits over the frozen mask).
        score_cf: Same score with the cue removed.
        score_change: ``(score_cf - score) / |score|`` (relative; NaN when ``score`` is 0).
        prob: Mean probability over the target mask (0-1).
        prob_cf: Same with the cue removed.
        prob_change: ``prob_cf - prob`` (absolute, -1..1).
        logit_change: Change of the mean logit over the target mask (log-odds, nats): the
            evidence for "farm" the cue was worth. Unlike ``prob_change`` it does not saturate:
            a confident farm whose odds fall five-fold moves its probability only from 0.95
            to 0.8.
        mask_iou: IoU of the predicted masks (original vs counterfactual) near the target
            (target dilated by the buffer); 1.0 when both are empty there.
        n_replaced: Cue pixels replaced.
        moved: Whether the prediction moved beyond any threshold: probability, log-odds or mask
            IoU (the IoU test needs at least :data:`MIN_IOU_PIXELS` predicted pixels near the
            target).
        moved_by: The tests that fired (``probability``, ``log_odds``, ``mask_iou``).
    """

    score: float
    score_cf: float
    score_change: float
    prob: float
    prob_cf: float
    prob_change: float
    logit_change: float
    mask_iou: float
    n_replaced: int
    moved: bool
    moved_by: tuple[str, ...] = ()


def remove_cue(
    image: np.ndarray,
    cue: np.ndarray,
    valid: np.ndarray,
    protect: np.ndarray,
    radius_px: int,
) -> np.ndarray:
    """Replace cue pixels with the per-band median of nearby background.

    Args:
        image: ``(C, H, W)`` stored DN (any numeric dtype).
        cue: ``(H, W)`` bool pixels to replace (pixels in ``protect`` are left alone).
        valid: ``(H, W)`` bool pixels with data (nodata pixels are neither used nor changed).
        protect: ``(H, W)`` bool pixels never changed nor used as background (farms).
        radius_px: Width of the ring around each cue blob whose background gives the median;
            when that ring has no background the patch-wide background median is used.

    Returns:
        A float32 copy of ``image`` with the cue replaced.
    """
    out = image.astype(np.float32, copy=True)
    target = cue & valid & ~protect
    background = valid & ~cue & ~protect
    if not target.any():
        return out
    fallback = (
        np.median(out[:, background], axis=1)
        if background.any()
        else np.median(out[:, valid & ~target], axis=1)
        if (valid & ~target).any()
        else np.zeros(out.shape[0], np.float32)
    )
    labels, _ = ndimage.label(target)
    slices = ndimage.find_objects(labels)
    height, width = target.shape
    for i, sl in enumerate(slices, start=1):
        r0 = max(sl[0].start - radius_px, 0)
        r1 = min(sl[0].stop + radius_px, height)
        c0 = max(sl[1].start - radius_px, 0)
        c1 = min(sl[1].stop + radius_px, width)
        win = (slice(r0, r1), slice(c0, c1))
        blob = labels[win] == i
        ring = dilate(blob, radius_px) & ~blob & background[win]
        fill = np.median(out[:, r0:r1, c0:c1][:, ring], axis=1) if ring.any() else fallback
        sub = out[:, r0:r1, c0:c1]
        sub[:, blob] = fill[:, None]
    return out


#: Quarter turns tried, in order, when a cue blob is moved to make a placebo.
PLACEBO_TURNS: tuple[int, ...] = (2, 1, 3)


def turn_about(
    rows: np.ndarray, cols: np.ndarray, centre: tuple[float, float], quarter_turns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by ``quarter_turns`` x 90 degrees about ``centre`` (row, col).

    ``centre`` is rounded to a pixel first, so quarter turns keep a blob's shape, area and
    distance from it exactly on the grid.
    """
    r0, c0 = round(centre[0]), round(centre[1])
    dr, dc = rows.astype(int) - r0, cols.astype(int) - c0
    for _ in range(quarter_turns % 4):
        dr, dc = dc, -dr
    return r0 + dr, c0 + dc


def placebo_mask(
    cue: np.ndarray, centre: tuple[float, float], allowed: np.ndarray, margin_px: int = 2
) -> np.ndarray:
    """The cue's blobs moved where there is no cue: the control of a counterfactual.

    Each connected blob of ``cue`` is turned about ``centre`` (the target's centroid) by the
    first of :data:`PLACEBO_TURNS` that puts it wholly on ``allowed`` pixels, at least
    ``margin_px`` from the cue and from blobs already placed; a blob with no such turn is left
    out. Removing the placebo edits the same area at the same distance from the target as
    removing the cue, on ordinary background: what a model does to any such edit.

    Args:
        cue: ``(H, W)`` bool cue pixels.
        centre: ``(row, col)`` to turn about.
        allowed: ``(H, W)`` bool pixels a placebo may cover (valid, not a farm).

    Returns:
        ``(H, W)`` bool placebo pixels (empty when no blob could be placed).
    """
    height, width = cue.shape
    free = allowed & ~dilate(cue, margin_px)
    out = np.zeros_like(cue, dtype=bool)
    labels, n = ndimage.label(cue)
    for i in range(1, n + 1):
        rows, cols = np.nonzero(labels == i)
        for turns in PLACEBO_TURNS:
            r, c = turn_about(rows, cols, centre, turns)
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            if inside.all() and free[r, c].all():
                out[r, c] = True
                free &= ~dilate(out, margin_px)
                break
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks; 1.0 when both are empty."""
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else 1.0


#: One patch of a counterfactual: original stored DN ``(C, H, W)``, the same with the cue
#: removed (:func:`remove_cue`), and the target with its frozen mask on that patch.
Case = tuple[np.ndarray, np.ndarray, Target]


def counterfactual(
    model: nn.Module,
    normalize: Normalizer,
    image: np.ndarray,
    image_cf: np.ndarray,
    target: Target,
    *,
    threshold: float,
    near_px: int,
    prob_threshold: float,
    iou_threshold: float,
    logit_threshold: float = math.inf,
) -> CounterfactualResult:
    """Re-predict ``image_cf`` and compare with ``image`` on ``target`` (one patch).

    Args:
        model: Emits logits ``(B, 1, H, W)`` from normalized input.
        normalize: Stored DN ``(B, C, H, W)`` array -> normalized tensor.
        image: ``(C, H, W)`` original stored DN.
        image_cf: ``(C, H, W)`` with the cue removed (:func:`remove_cue`).
        target: The target with its frozen mask (from the original prediction or a polygon).
        threshold: Probability threshold of the predicted mask.
        near_px: The IoU is computed on the target dilated by this many pixels.
        prob_threshold: ``|prob_change|`` at or above which the prediction moved.
        iou_threshold: Mask IoU at or below which the prediction moved.
        logit_threshold: ``|logit_change|`` at or above which the prediction moved (``inf``:
            not tested).
    """
    return pooled_counterfactual(
        model,
        normalize,
        [(image, image_cf, target)],
        threshold=threshold,
        near_px=near_px,
        prob_threshold=prob_threshold,
        iou_threshold=iou_threshold,
        logit_threshold=logit_threshold,
    )


def pooled_counterfactual(
    model: nn.Module,
    normalize: Normalizer,
    cases: Sequence[Case],
    *,
    threshold: float,
    near_px: int,
    prob_threshold: float,
    iou_threshold: float,
    logit_threshold: float = math.inf,
) -> CounterfactualResult:
    """:func:`counterfactual` of a target that spans several patches, pooled over its pixels.

    A farm cut by patch edges is seen by each patch that holds part of it, and its cue may lie
    in only one of them. The farm's score, mean probability and mask IoU are therefore pooled
    over every case (sums of logits, probabilities and mask intersections/unions over the
    target pixels of all patches), as one farm-level prediction; patches without the cue add
    their unchanged part, so the change is the farm's, not that of its most affected piece.

    Args:
        cases: One :data:`Case` per patch holding part of the target (at least one).
        threshold, near_px, prob_threshold, iou_threshold, logit_threshold: As in
            :func:`counterfactual`.
    """
    if not cases:
        raise ValueError("pooled_counterfactual needs at least one case")
    score = np.zeros(2)
    logit_sum = np.zeros(2)
    prob_sum = np.zeros(2)
    n_target = inter = union = replaced = 0
    reduce_mean = False
    for image, image_cf, target in cases:
        batch = normalize(np.stack([image, image_cf]).astype(np.float32))
        with torch.no_grad():
            logits = model(batch)[:, 0]
        weights = target.mask.to(logits.device, logits.dtype)
        score += (logits * weights).flatten(1).sum(1).cpu().numpy()
        reduce_mean = reduce_mean or target.reduce == "mean"
        prob = torch.sigmoid(logits).cpu().numpy()
        tmask = target.mask.cpu().numpy()
        prob_sum += prob[:, tmask].sum(axis=1)
        logit_sum += logits.cpu().numpy()[:, tmask].astype(np.float64).sum(axis=1)
        n_target += int(tmask.sum())
        near = dilate(tmask, near_px)
        m0, m1 = (prob[0] >= threshold) & near, (prob[1] >= threshold) & near
        inter += int((m0 & m1).sum())
        union += int((m0 | m1).sum())
        replaced += int(np.any(image != image_cf, axis=0).sum())
    if reduce_mean and n_target:
        score = score / n_target
    p0, p1 = (float(v) for v in prob_sum / max(n_target, 1))
    z0, z1 = (float(v) for v in logit_sum / max(n_target, 1))
    miou = inter / union if union else 1.0
    s0, s1 = float(score[0]), float(score[1])
    change = (s1 - s0) / abs(s0) if s0 != 0 else float("nan")
    big_enough = union >= MIN_IOU_PIXELS
    moved_by = tuple(
        name
        for name, fired in (
            ("probability", abs(p1 - p0) >= prob_threshold),
            ("log_odds", abs(z1 - z0) >= logit_threshold),
            ("mask_iou", big_enough and miou <= iou_threshold),
        )
        if fired
    )
    return CounterfactualResult(
        s0, s1, change, p0, p1, p1 - p0, z1 - z0, miou, replaced, bool(moved_by), moved_by
    )


def placebo_columns(
    placebo: CounterfactualResult | None, res: CounterfactualResult, ratio: float
) -> dict[str, float | int | bool | None]:
    """The placebo control's columns and whether the cue's effect is specific to the cue.

    ``specific`` is ``None`` when no placebo ran (turned off, or no blob could be placed),
    else whether the cue's log-odds change is at least ``ratio`` times the placebo's.
    """
    if placebo is None or placebo.n_replaced == 0:
        return {
            "placebo_prob_change": None,
            "placebo_logit_change": None,
            "placebo_replaced": 0,
            "specific": None,
        }
    return {
        "placebo_prob_change": placebo.prob_change,
        "placebo_logit_change": placebo.logit_change,
        "placebo_replaced": placebo.n_replaced,
        "specific": bool(abs(res.logit_change) >= ratio * abs(placebo.logit_change)),
    }


# ------------------------------------------------------------------------ one farm and cue
def farm_cases(
    row: Mapping[str, Any],
    patches: Mapping[str, PatchData],
    farm_masks: Mapping[tuple[str, str, str], np.ndarray],
) -> list[tuple[PatchData, np.ndarray]]:
    """The patches holding part of a flag row's farm, with its mask there, largest part first.

    Args:
        row: A flag row (``target``, ``target_id``, ``patch_ids`` as JSON).
        patches: The audited patches by id.
        farm_masks: ``(patch_id, target kind, target id) -> (H, W)`` bool farm masks.
    """
    key = (row["target"], row["target_id"])
    cases = [
        (patches[q], farm_masks[(q, *key)])
        for q in json.loads(row["patch_ids"])
        if (q, *key) in farm_masks
    ]
    return sorted(cases, key=lambda c: -int(c[1].sum()))


def mask_centre(mask: np.ndarray) -> tuple[float, float]:
    """``(row, col)`` centroid of an ``(H, W)`` bool mask; ``(0, 0)`` when it is empty."""
    rows, cols = np.nonzero(mask)
    return (float(rows.mean()), float(cols.mean())) if rows.size else (0.0, 0.0)


def usable_cue(p: PatchData, cue: str, bands: tuple[str, ...]) -> np.ndarray | str:
    """The ``(H, W)`` bool pixels of ``cue`` on ``p``, or why ``p`` cannot take part in its
    counterfactual (the model wants other bands, or the cue is not computable there)."""
    if p.bands != bands:
        return f"{p.patch_id}: patch bands {list(p.bands)} differ from the model's {list(bands)}"
    mask = p.cues[cue].mask
    return f"{p.patch_id}: {p.cues[cue].reason}" if mask is None else mask


def placebo_pixels(p: PatchData, cue: np.ndarray, tmask: np.ndarray, margin_px: int) -> np.ndarray:
    """``(H, W)`` bool: the cue's blobs near the target turned onto plain background.

    A placebo avoids farms, the target and every computable cue by ``margin_px``
    (:func:`placebo_mask` about the target's centre).
    """
    protect = p.labels | tmask
    shun = protect | np.any([c.mask for c in p.cues.values() if c.mask is not None], 0)
    allowed = p.valid & ~dilate(shun, margin_px)
    return placebo_mask(cue & p.valid & ~protect, mask_centre(tmask), allowed)


@dataclass
class FarmCases:
    """The cases of one farm's counterfactual and its placebo, and why patches were left out."""

    usable: list[Case] = field(default_factory=list)
    placebos: list[Case] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    used: list[str] = field(default_factory=list)


def prepare_cases(
    row: Mapping[str, Any],
    cases: Sequence[tuple[PatchData, np.ndarray]],
    bands: tuple[str, ...],
    audit: AuditConfig,
) -> FarmCases:
    """Remove the row's cue (and, when ``audit.placebo_ratio`` > 0, its placebo) on each patch.

    Args:
        row: A flag row (``target``, ``target_id``, ``cue``).
        cases: :func:`farm_cases`.
        bands: The model's bands (a patch with other bands is left out).
        audit: Background radius, buffer and placebo settings.
    """
    out = FarmCases()
    for p, tmask in cases:
        cue = usable_cue(p, str(row["cue"]), bands)
        if isinstance(cue, str):
            out.reasons.append(cue)
            continue
        radius = max(1, round(audit.background_radius_m / p.grid.res))
        protect = p.labels | tmask
        image = p.image.astype(np.float32)
        target = Target(str(row["target"]), str(row["target_id"]), torch.from_numpy(tmask))
        out.usable.append((image, remove_cue(image, cue, p.valid, protect, radius), target))
        out.used.append(p.patch_id)
        if audit.placebo_ratio > 0:
            fake = placebo_pixels(p, cue, tmask, buffer_pixels(audit.buffer_m, p.grid.res))
            out.placebos.append(
                (image, remove_cue(image, fake, p.valid, protect | cue, radius), target)
            )
    return out


def counterfactual_columns(
    res: CounterfactualResult, control: Mapping[str, Any], prepared: FarmCases
) -> dict[str, Any]:
    """The flag table's counterfactual columns of a run counterfactual.

    ``moved`` holds only when the placebo does not show the effect to be unspecific.
    """
    return {
        "cf_status": "ok",
        "cf_reason": "; ".join(prepared.reasons),
        "cf_patch": json.dumps(prepared.used),
        "score": res.score,
        "score_cf": res.score_cf,
        "score_change": res.score_change,
        "prob": res.prob,
        "prob_cf": res.prob_cf,
        "prob_change": res.prob_change,
        "logit_change": res.logit_change,
        "mask_iou": res.mask_iou,
        "n_replaced": res.n_replaced,
        "moved": res.moved and control["specific"] is not False,
        "moved_by": json.dumps(list(res.moved_by)),
        **control,
    }


def scorer(
    access: ModelAccess, audit: AuditConfig, gsd: float
) -> Callable[[Sequence[Case]], CounterfactualResult]:
    """:func:`pooled_counterfactual` with the model and the audit's thresholds bound (``gsd``:
    the patches' pixel size in metres, for the IoU's neighbourhood)."""
    return partial(
        pooled_counterfactual,
        access.model,
        access.normalize,
        threshold=access.threshold,
        near_px=max(3, buffer_pixels(audit.buffer_m, gsd)),
        prob_threshold=audit.counterfactual_threshold,
        iou_threshold=audit.counterfactual_iou,
        logit_threshold=audit.counterfactual_logit,
    )


def run_counterfactual(
    row: Mapping[str, Any],
    cases: Sequence[tuple[PatchData, np.ndarray]],
    access: ModelAccess,
    audit: AuditConfig,
) -> dict[str, Any]:
    """Counterfactual columns for one (farm target, cue), pooled over the target's patches.

    Args:
        row: A flag row (``target``, ``target_id``, ``cue``).
        cases: Each patch holding part of the target, with the target's mask there
            (:func:`farm_cases`). The ``cf_patch`` column lists the patches used (JSON), in
            this order.
        access: The model.
        audit: Thresholds and settings of the counterfactual and its placebo.

    Returns:
        ``cf_status`` ``ok`` with :func:`counterfactual_columns`, or ``skipped`` with the
        reasons in ``cf_reason`` when no patch could be used.
    """
    prepared = prepare_cases(row, cases, access.bands, audit)
    if not prepared.usable:
        return {"cf_status": "skipped", "cf_reason": "; ".join(prepared.reasons)}
    score = scorer(access, audit, cases[0][0].grid.res)
    res = score(prepared.usable)
    placebo = score(prepared.placebos) if prepared.placebos else None
    return counterfactual_columns(res, placebo_columns(placebo, res, audit.placebo_ratio), prepared)
