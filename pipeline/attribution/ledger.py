"""The attribute stage's tables: index rows, per-farm rows and skip records, with their columns.

This module owns the columns of ``attribute/index.csv`` (:data:`INDEX_COLUMNS`) and of
``attribute/farms.gpkg`` (:data:`FARM_COLUMNS`); readers (audit, report) take them from here.
Functions build rows and return them; :class:`PatchRecords` carries the rows of one patch (or of
the whole run, :func:`combine`) and nothing is mutated behind the caller's back.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.attribution.methods import AttributionResult
from pipeline.attribution.objects import RegionMass

log = logging.getLogger(__name__)

#: Columns of ``attribute/index.csv``: one row per (patch, method, target), explained or not.
INDEX_COLUMNS: Final[tuple[str, ...]] = (
    "patch_id",
    "method",
    "target",
    "target_id",
    "path",
    "score",
    "baseline_score",
    "completeness_gap",
    "gap_flag",
    "seconds",
    "target_pixels",
    "status",
    "reason",
)

#: Columns of ``attribute/farms.gpkg`` (EPSG:4326): one row per (object, patch, method).
FARM_COLUMNS: Final[tuple[str, ...]] = (
    "farm_id",
    "kind",
    "patch_id",
    "method",
    "mass_inside",
    "mass_ring",
    "mass_outside",
    "share_inside",
    "share_ring",
    "share_outside",
    "top_bands",
    "score",
    "completeness_gap",
    "gap_flag",
    "geometry",
)

Row = dict[str, Any]


@dataclass(frozen=True)
class Skip:
    """A (patch, method, target) that was not explained, and why.

    ``*`` stands for every patch, method, target or id the skip covers.
    """

    patch_id: str
    method: str
    target: str
    target_id: str
    reason: str
    status: Literal["skipped", "failed"] = "skipped"

    def row(self) -> Row:
        """The skip's index row (the columns it does not set stay empty)."""
        return {
            "patch_id": self.patch_id,
            "method": self.method,
            "target": self.target,
            "target_id": self.target_id,
            "path": "",
            "status": self.status,
            "reason": self.reason,
        }


def reason_key(reason: str) -> str:
    """The manifest's name of a skip reason: its text up to the first ``:`` (80 chars)."""
    return reason.split(":")[0][:80]


def skip_row(skip: Skip) -> Row:
    """Log ``skip`` and return its index row.

    Ordinary skips (an empty target on a negative patch, a spent budget) are logged at DEBUG:
    the stage sums them up in one line (:func:`tally`). Failures are logged at WARNING.
    """
    level = logging.WARNING if skip.status == "failed" else logging.DEBUG
    log.log(
        level,
        "attribute %s %s %s/%s: %s",
        skip.patch_id,
        skip.method,
        skip.target,
        skip.target_id,
        skip.reason,
    )
    return skip.row()


def result_row(
    result: AttributionResult, *, patch_id: str, path: str, seconds: float, flag: bool | None
) -> Row:
    """The index row of one written attribution.

    Args:
        result: The attribution.
        patch_id: Its patch.
        path: The COG's path relative to the run folder.
        seconds: Wall time of :func:`~pipeline.attribution.methods.explain`.
        flag: Its completeness-gap flag (``None`` for methods without completeness).
    """
    return {
        "patch_id": patch_id,
        "method": result.method,
        "target": result.target.name,
        "target_id": result.target.target_id,
        "path": path,
        "score": result.score,
        "baseline_score": result.baseline_score,
        "completeness_gap": result.completeness_gap,
        "gap_flag": flag,
        "seconds": round(seconds, 4),
        "target_pixels": int(result.target.mask.sum()),
        "status": "ok",
        "reason": "all-zero attribution" if result.params.get("all_zero") else "",
    }


def farm_row(
    result: AttributionResult,
    *,
    patch_id: str,
    mass: RegionMass,
    flag: bool | None,
    geometry_4326: Any,
) -> Row:
    """The ``farms.gpkg`` row of one object target's attribution (geometry in EPSG:4326)."""
    return {
        "farm_id": result.target.target_id,
        "kind": result.target.name,
        "patch_id": patch_id,
        "method": result.method,
        "mass_inside": mass.inside,
        "mass_ring": mass.ring,
        "mass_outside": mass.outside,
        "share_inside": mass.share_inside,
        "share_ring": mass.share_ring,
        "share_outside": mass.share_outside,
        "top_bands": json.dumps(list(mass.top_bands)),
        "score": result.score,
        "completeness_gap": result.completeness_gap,
        "gap_flag": flag,
        "geometry": geometry_4326,
    }


@dataclass(frozen=True)
class PatchRecords:
    """What explaining one patch (or a whole run) produced.

    Attributes:
        rows: Index rows in the order they happened (explained and skipped).
        farms: ``farms.gpkg`` rows of object targets.
        outputs: Files written (COGs, quicklooks).
        quicklooks: Quicklooks written.
        agreement: IoU of each recomputed ``predicted_mask`` target with predict's mask.
    """

    rows: list[Row] = field(default_factory=list)
    farms: list[Row] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    quicklooks: int = 0
    agreement: list[float] = field(default_factory=list)


def skip_records(skips: Iterable[Skip]) -> PatchRecords:
    """Records holding only ``skips`` (each logged)."""
    return PatchRecords(rows=[skip_row(s) for s in skips])


def combine(parts: Iterable[PatchRecords]) -> PatchRecords:
    """One record of several, in order."""
    parts = list(parts)
    return PatchRecords(
        rows=[r for p in parts for r in p.rows],
        farms=[f for p in parts for f in p.farms],
        outputs=[o for p in parts for o in p.outputs],
        quicklooks=sum(p.quicklooks for p in parts),
        agreement=[a for p in parts for a in p.agreement],
    )


def tally(records: PatchRecords) -> dict[str, Any]:
    """Counts for the manifest: attributions, skips and failures (with reasons), gap flags."""
    statuses = Counter(r["status"] for r in records.rows)
    reasons = Counter(reason_key(r["reason"]) for r in records.rows if r["status"] != "ok")
    return {
        "attributions": statuses.get("ok", 0),
        "skipped": statuses.get("skipped", 0),
        "failed": statuses.get("failed", 0),
        "skip_reasons": dict(reasons),
        "gap_flags": sum(1 for r in records.rows if r.get("gap_flag") is True),
        "farm_rows": len(records.farms),
    }


def mean_agreement(records: PatchRecords) -> float | None:
    """Mean IoU of the recomputed predicted masks with predict's (4 decimals), or ``None``."""
    return round(float(np.mean(records.agreement)), 4) if records.agreement else None


def index_frame(rows: list[Row]) -> pd.DataFrame:
    """``attribute/index.csv`` as a frame with :data:`INDEX_COLUMNS`."""
    return pd.DataFrame(rows, columns=list(INDEX_COLUMNS))


def farms_frame(rows: list[Row]) -> gpd.GeoDataFrame:
    """``attribute/farms.gpkg`` as a frame with :data:`FARM_COLUMNS` (EPSG:4326).

    ``gap_flag`` is text: ``true``, ``false`` or empty (no completeness for the method).
    """
    frame = gpd.GeoDataFrame(
        pd.DataFrame(rows, columns=list(FARM_COLUMNS)), geometry="geometry", crs=4326
    )
    frame["gap_flag"] = (
        frame["gap_flag"].astype(object).map(lambda v: "" if v is None else str(bool(v)).lower())
    )
    return frame
