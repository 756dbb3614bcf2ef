"""The evaluation pass: a thresholded prediction scored against the labels, patch by patch.

:func:`score_patch` takes one patch's probabilities and label mask (arrays on one grid) and
returns a :class:`PatchScore`: pixel counts, the one-to-one object matching, the predicted farm
polygons marked matched or not, the false positives among them and the missed label farms as
polygons (all in the patch CRS). :func:`tally_splits` sums the counts per split and
:func:`metrics_report` assembles ``predict/metrics.json``. No file is read or written here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np

from pipeline.geo.raster import Grid
from pipeline.model.evaluate import (
    ObjectCounts,
    ObjectMatch,
    PixelCounts,
    components,
    match_objects,
    pixel_counts,
)
from pipeline.model.polygons import labels_to_polygons, mask_to_polygons


@dataclass(frozen=True)
class ScoringRules:
    """How probabilities become farms and how farms are matched.

    Attributes:
        threshold: ``prob >= threshold`` is farm.
        threshold_rule: Where the threshold came from (``model``, ``config``, ...).
        min_area_m2: Predicted polygons smaller than this are dropped.
        match_iou: Smallest IoU of a predicted and a label farm that counts as a match.
    """

    threshold: float
    threshold_rule: str
    min_area_m2: float
    match_iou: float


@dataclass(frozen=True)
class PatchScore:
    """One patch's evaluation.

    Attributes:
        split: The patch's split.
        pixels: Confusion counts over valid (finite-probability) pixels.
        match: Predicted vs label components.
        farms: Predicted polygons (patch CRS) with ``split`` and ``matched`` columns.
        false_positives: The rows of ``farms`` that match no label farm.
        missed: Label farms no prediction matched (patch CRS, ids ``label_<patch>_<k>``).
    """

    split: str
    pixels: PixelCounts
    match: ObjectMatch
    farms: gpd.GeoDataFrame
    false_positives: gpd.GeoDataFrame
    missed: gpd.GeoDataFrame


def missed_polygons(
    truth_labels: np.ndarray, match: ObjectMatch, grid: Grid, patch_id: str, prob: np.ndarray
) -> gpd.GeoDataFrame:
    """Polygons of the label components ``match`` left unmatched (empty when none)."""
    keep = np.isin(truth_labels, match.unmatched_truth)
    lost = labels_to_polygons(
        np.where(keep, truth_labels, 0), grid, patch_id=patch_id, prob=prob, id_prefix="label_"
    )
    return lost[lost["pixels"] > 0].reset_index(drop=True)


def score_patch(
    prob: np.ndarray,
    truth: np.ndarray,
    grid: Grid,
    *,
    patch_id: str,
    split: str,
    rules: ScoringRules,
) -> PatchScore:
    """Score one patch's probabilities against its label mask.

    Args:
        prob: ``(H, W)`` float probabilities in [0, 1], NaN where the input had no data.
        truth: ``(H, W)`` bool label mask on the same grid.
        grid: The patch grid (polygons are in its CRS).
        patch_id: Written into every polygon row.
        split: The patch's split.
        rules: Threshold, minimum polygon area, matching IoU.
    """
    pred = np.nan_to_num(prob, nan=0.0) >= rules.threshold
    pixels = pixel_counts(pred, truth, valid=np.isfinite(prob))
    polys, pred_labels = mask_to_polygons(
        pred, grid, patch_id=patch_id, prob=prob, min_area_m2=rules.min_area_m2
    )
    truth_labels, _ = components(truth)
    match = match_objects(pred_labels, truth_labels, rules.match_iou)
    polys["split"] = split
    polys["matched"] = [k not in match.unmatched_pred for k in range(1, len(polys) + 1)]
    false_pos = polys.iloc[[k - 1 for k in match.unmatched_pred]]
    missed = polys.iloc[[]]
    if match.unmatched_truth:
        missed = missed_polygons(truth_labels, match, grid, patch_id, prob)
        missed["split"] = split
    return PatchScore(split, pixels, match, polys, false_pos, missed)


def tally_splits(
    scores: Sequence[PatchScore], splits: Sequence[str]
) -> tuple[dict[str, PixelCounts], dict[str, ObjectCounts]]:
    """Pixel and object counts summed per split (every split of ``splits``, maybe zero)."""
    pixel = {s: PixelCounts() for s in splits}
    objects = {s: ObjectCounts() for s in splits}
    for score in scores:
        pixel[score.split] = pixel[score.split].add(score.pixels)
        objects[score.split].add(score.match)
    return pixel, objects


def metrics_report(
    rules: ScoringRules,
    pixel: Mapping[str, Mapping[str, Any]],
    objects: Mapping[str, Mapping[str, Any]],
    patches: int,
    model_digest: str,
    tiles_digest: str,
) -> dict[str, Any]:
    """``predict/metrics.json``: threshold and rules, per-split metrics, the model's data digest.

    Args:
        rules: The scoring rules in use.
        pixel: Pixel metrics by split (:func:`~pipeline.model.evaluate.split_metrics`).
        objects: Object metrics by split.
        patches: Patches predicted.
        model_digest: Digest of the tiles the model was trained on.
        tiles_digest: Digest of the tiles predicted now.
    """
    return {
        "threshold": rules.threshold,
        "threshold_rule": rules.threshold_rule,
        "pixel": dict(pixel),
        "object": dict(objects),
        "match_iou": rules.match_iou,
        "min_polygon_area_m2": rules.min_area_m2,
        "patches": patches,
        "model_data_digest": model_digest,
        "model_matches_tiles": model_digest == tiles_digest,
    }
