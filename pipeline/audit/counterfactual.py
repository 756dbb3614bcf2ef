"""Counterfactual proof: remove the cue, re-predict, and see whether the prediction moves.

Attribution points at a cue; the counterfactual proves reliance. Each connected blob of the cue
is replaced, band by band, with the median of the non-cue, non-farm valid pixels in a ring
around it (plausible local background, in stored DN). The target's frozen mask is re-scored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from pipeline.attribution.targets import Target
from pipeline.audit.reliance import dilate

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
        mask_iou: IoU of the predicted masks (original vs counterfactual) near the target
            (target dilated by the buffer); 1.0 when both are empty there.
        n_replaced: Cue pixels replaced.
        moved: Whether the prediction moved beyond the thresholds (the IoU test needs at least
            :data:`MIN_IOU_PIXELS` predicted pixels near the target).
    """

    score: float
    score_cf: float
    score_change: float
    prob: float
    prob_cf: float
    prob_change: float
    mask_iou: float
    n_replaced: int
    moved: bool


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
    out = image.astype(np.float32).copy()
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


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks; 1.0 when both are empty."""
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else 1.0


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
) -> CounterfactualResult:
    """Re-predict ``image_cf`` and compare with ``image`` on ``target``.

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
    """
    batch = normalize(np.stack([image, image_cf]).astype(np.float32))
    with torch.no_grad():
        logits = model(batch)[:, 0]
    weights = target.mask.to(logits.device, logits.dtype)
    scores = (logits * weights).flatten(1).sum(1).cpu().numpy()
    if target.reduce == "mean":
        scores = scores / float(target.mask.sum())
    prob = torch.sigmoid(logits).cpu().numpy()
    tmask = target.mask.cpu().numpy()
    p0, p1 = float(prob[0][tmask].mean()), float(prob[1][tmask].mean())
    near = dilate(tmask, near_px)
    m0, m1 = (prob[0] >= threshold) & near, (prob[1] >= threshold) & near
    miou = iou(m0, m1)
    s0, s1 = float(scores[0]), float(scores[1])
    change = (s1 - s0) / abs(s0) if s0 != 0 else float("nan")
    big_enough = int((m0 | m1).sum()) >= MIN_IOU_PIXELS
    moved = abs(p1 - p0) >= prob_threshold or (big_enough and miou <= iou_threshold)
    return CounterfactualResult(
        s0, s1, change, p0, p1, p1 - p0, miou, int(np.any(image != image_cf, axis=0).sum()), moved
    )
