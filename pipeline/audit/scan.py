"""One pass over the attributed patches: each patch is read once and every attribution map of
it is measured on the patch's cues (:func:`scan_patches`).

The pass gathers what the rest of the audit works from (:class:`Scan`): the patches, the rows
of ``cues.csv`` and ``reliance.csv``, per-target statistics for pooling, and each farm's mask
on each patch (for its counterfactual and the explanation checks).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.audit.patches import (
    FARM_TARGETS,
    PatchData,
    Polygons,
    cue_rows,
    load_patch,
    read_attribution,
    target_mask,
)
from pipeline.audit.reliance import (
    StatKey,
    TargetStats,
    buffer_pixels,
    outside_region,
    reliance_rows,
)
from pipeline.config import RunConfig
from pipeline.paths import RunPaths
from pipeline.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class Scan:
    """What one pass over the attributed patches gathers.

    Attributes:
        patches: The patches by id.
        cues: Rows of ``cues.csv``.
        reliance: Rows of ``reliance.csv``.
        stats: Per (target kind, target id, method, cue) statistics for pooling.
        farm_masks: ``(patch_id, target kind, target id) -> (H, W)`` bool mask of each object
            target on each patch holding part of it.
        skipped: Reason -> attribution rows skipped for it (a target without a polygon).
    """

    patches: dict[str, PatchData] = field(default_factory=dict)
    cues: list[dict[str, Any]] = field(default_factory=list)
    reliance: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[StatKey, TargetStats] = field(default_factory=dict)
    farm_masks: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)


def measure_map(
    row: pd.Series,
    p: PatchData,
    polygons: Polygons,
    paths: RunPaths,
    cfg: RunConfig,
    scan: Scan,
) -> None:
    """Measure the attribution map of index ``row`` on the cues of its patch ``p``, into ``scan``.

    The reliance region is the patch outside the labelled and predicted farms, the target and
    a buffer of ``audit.buffer_m`` around them.
    """
    kind, tid = str(row["target"]), str(row["target_id"])
    tmask = target_mask(kind, tid, p, polygons)
    if tmask is None:
        scan.skipped[f"no polygon for {kind} {tid}"] += 1
        return
    if kind in FARM_TARGETS:
        scan.farm_masks[(p.patch_id, kind, tid)] = tmask
    values, aggregate = read_attribution(paths.resolve(str(row["path"])))
    buffer_px = buffer_pixels(cfg.audit.buffer_m, p.grid.res)
    region = outside_region(p.labels | p.predicted | tmask, p.valid, buffer_px)
    ident = {
        "patch_id": p.patch_id,
        "method": row["method"],
        "target": row["target"],
        "target_id": row["target_id"],
    }
    scan.reliance += reliance_rows(values, aggregate, p.cues, region, ident, cfg.audit, scan.stats)


def scan_patches(
    index: pd.DataFrame,
    analyst: Mapping[str, Any],
    polygons: Polygons,
    cfg: RunConfig,
    paths: RunPaths,
) -> Scan:
    """Read each attributed patch once (sorted by id) and measure every attribution map on it.

    Args:
        index: The attribution index rows to audit (status ``ok``).
        analyst: Analyst cue sources (``patches.read_analyst_cues``).
        polygons: Object targets' polygons (``patches.read_farm_polygons``).
        cfg: The run's config (audit settings, run name for error messages).
        paths: The run's paths.

    Raises:
        MissingArtifactError: a patch image is missing.
    """
    scan = Scan()
    groups = index.groupby("patch_id", sort=True)
    with Progress("audit: measuring attributions", groups.ngroups, "patches") as progress:
        for pid, rows in groups:
            p = load_patch(paths, cfg, str(pid), analyst)
            scan.patches[p.patch_id] = p
            scan.cues += cue_rows(p)
            for _, row in rows.iterrows():
                measure_map(row, p, polygons, paths, cfg, scan)
            progress.update()
    for reason, n in scan.skipped.items():
        log.warning("skipped %d attribution rows: %s", n, reason)
    return scan
