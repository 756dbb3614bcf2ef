"""One pass over the attributed patches: each patch is read once and every attribution map of
it is measured on the patch's cues (:func:`scan_patches`).

The pass gathers what the rest of the audit works from (:class:`Scan`): the patches, the rows
of ``cues.csv`` and ``reliance.csv``, per-target statistics for pooling, and each farm's mask
on each patch (for its counterfactual and the explanation checks). Each patch is one Dask task
(:func:`scan_patch`) returning its own :class:`Scan`; the client merges them in patch order
(:meth:`Scan.merge`), so the result is the same on any number of workers.
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
from pipeline.compute import run_tasks
from pipeline.config import RunConfig
from pipeline.paths import RunPaths

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

    def merge(self, other: Scan) -> None:
        """Append ``other`` (the scan of later patches), as if one pass had read them next."""
        self.patches.update(other.patches)
        self.cues += other.cues
        self.reliance += other.reliance
        for key, stats in other.stats.items():
            mine = self.stats.setdefault(key, TargetStats())
            mine.patch_units += stats.patch_units
            mine.block_units += stats.block_units
            mine.patches += stats.patches
            mine.swir += stats.swir
            if not stats.computable:
                mine.computable, mine.reason = False, stats.reason
        self.farm_masks.update(other.farm_masks)
        self.skipped.update(other.skipped)


@dataclass(frozen=True)
class ScanSetup:
    """What every patch's scan needs (scattered to the workers once).

    Attributes:
        analyst: Analyst cue sources (``patches.read_analyst_cues``).
        polygons: Object targets' polygons (``patches.read_farm_polygons``).
        cfg: The run's config (audit settings, run name for error messages).
        paths: The run's paths.
    """

    analyst: Mapping[str, Any]
    polygons: Polygons
    cfg: RunConfig
    paths: RunPaths


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


def scan_patch(setup: ScanSetup, pid: str, rows: pd.DataFrame) -> Scan:
    """Read one patch and measure the attribution maps of its index ``rows`` (a Dask task).

    Raises:
        MissingArtifactError: the patch image is missing.
    """
    scan = Scan()
    p = load_patch(setup.paths, setup.cfg, pid, setup.analyst, setup.polygons)
    scan.patches[p.patch_id] = p
    scan.cues += cue_rows(p)
    for _, row in rows.iterrows():
        measure_map(row, p, setup.polygons, setup.paths, setup.cfg, scan)
    return scan


def scan_patches(client: Any, index: pd.DataFrame, setup: ScanSetup) -> Scan:
    """Read each attributed patch once (sorted by id) and measure every attribution map on it,
    one Dask task per patch on ``client``.

    Args:
        client: A ``distributed.Client``.
        index: The attribution index rows to audit (status ``ok``).
        setup: What every patch's scan needs.

    Raises:
        MissingArtifactError: a patch image is missing.
    """
    shared = client.scatter(setup, broadcast=True, hash=False)
    calls = [(shared, str(pid), rows) for pid, rows in index.groupby("patch_id", sort=True)]
    parts = run_tasks(
        client,
        scan_patch,
        calls,
        what="audit: measuring attributions",
        unit="patches",
        retries=setup.cfg.compute.retries,
    )
    scan = Scan()
    for part in parts:
        scan.merge(part)
    for reason, n in scan.skipped.items():
        log.warning("skipped %d attribution rows: %s", n, reason)
    return scan
