"""Ignore masks: the pixels of each tile that a retraining leaves out of the loss.

Regions (EPSG:4326, e.g. :func:`pipeline.triage.feedback.ignore_regions`) are burnt onto each
tile's own grid with ``all_touched`` (a pixel an ignored outline touches is ignored). In a
training target an ignored pixel holds :data:`IGNORE_VALUE` instead of 0 or 1; the loss
(:class:`~pipeline.model.module.SegLoss`) and the validation metrics skip it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import geopandas as gpd
import numpy as np
import torch

from pipeline.config.feedback import IgnoreLabelsConfig
from pipeline.geo.masks import farms_on_grid, rasterize_mask
from pipeline.geo.raster import read_grid
from pipeline.model.records import TileRecord

#: Target value of an ignored pixel (farm 1, background 0).
IGNORE_VALUE: Final[float] = -1.0


def tile_ignore_mask(record: TileRecord, regions: gpd.GeoDataFrame) -> np.ndarray | None:
    """Bool ``(H, W)`` on ``record``'s grid, True where a region touches; ``None`` if none does.

    Args:
        record: The tile.
        regions: EPSG:4326 frame with a ``farm_id`` column (any id) and polygons.
    """
    if regions.empty:
        return None
    grid = read_grid(record.image)
    _, geoms = farms_on_grid(regions, grid)
    if not geoms:
        return None
    mask = rasterize_mask(geoms, grid, all_touched=True) > 0
    return mask if mask.any() else None


def ignore_masks(records: Sequence[TileRecord], regions: gpd.GeoDataFrame) -> dict[str, np.ndarray]:
    """:func:`tile_ignore_mask` of every record that has ignored pixels, by patch id."""
    out: dict[str, np.ndarray] = {}
    for record in records:
        mask = tile_ignore_mask(record, regions)
        if mask is not None:
            out[record.patch_id] = mask
    return out


def apply_ignore(target: torch.Tensor, ignore: np.ndarray | None) -> torch.Tensor:
    """``target`` (``(1, H, W)`` 0/1 floats) with ignored pixels set to :data:`IGNORE_VALUE`."""
    if ignore is None:
        return target
    out = target.clone()
    out[:, torch.from_numpy(ignore)] = IGNORE_VALUE
    return out


def valid_pixels(target: torch.Tensor) -> torch.Tensor:
    """True where ``target`` is a label (not ignored)."""
    return target >= 0


def ignore_summary(
    cfg: IgnoreLabelsConfig,
    review_sha256: str,
    regions: gpd.GeoDataFrame,
    masks: Mapping[str, np.ndarray],
    records: Sequence[TileRecord],
) -> dict[str, Any]:
    """What ``train.ignore_labels`` left out, for the train manifest: the review file and its
    SHA-256, regions by kind, and per split the tiles touched and pixels ignored."""
    per_split: dict[str, dict[str, int]] = {}
    for record in records:
        row = per_split.setdefault(record.split, {"tiles": 0, "pixels": 0})
        if record.patch_id in masks:
            row["tiles"] += 1
            row["pixels"] += int(masks[record.patch_id].sum())
    return {
        "review": str(cfg.review),
        "review_sha256": review_sha256,
        "regions": {str(k): int(v) for k, v in regions["kind"].value_counts().items()},
        "per_split": per_split,
    }
