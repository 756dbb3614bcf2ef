"""Tiling: label masks on each fetched patch grid, the tiles index, band statistics.

A map over patches: :func:`tile_patch` is a pure per-patch function (read the image's grid and
pixels, rasterize the farms onto exactly that grid, write the mask, return small numbers), so a
loop over it can be handed to Dask or a process pool unchanged. The reduce step is
:func:`pipeline.geo.splits.assign_splits` (groups of patches that overlap or share a farm get
the split of their first member's block), :func:`tiles_table` (the index) and
:func:`band_stats` (the train patches' band moments merged).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from shapely.geometry.base import BaseGeometry

from pipeline.bands import BANDS
from pipeline.errors import PipelineError
from pipeline.geo.masks import BandMoments, farms_on_grid, grid_footprint_lonlat, rasterize_mask
from pipeline.geo.raster import read_patch, write_cog
from pipeline.geo.splits import SPLITS, SplitAssignment
from pipeline.geo.styles import MASK_ENCODING, MASK_NODATA, mask_style, write_style

log = logging.getLogger(__name__)

#: Columns of ``tiles/index.gpkg`` (layer ``tiles``, EPSG:4326), besides the geometry.
TILES_COLUMNS = (
    "patch_id",
    "split",
    "block",
    "group",
    "kind",
    "image",
    "scl",
    "mask",
    "coverage",
    "farm_pixels",
    "farm_ids",
)


@dataclass(frozen=True)
class PatchTask:
    """One patch to tile.

    Attributes:
        patch_id: Plan id.
        image: The fetched 10-band patch COG.
        mask_out: Where the mask COG goes.
        plan_farm_ids: Farms the plan put in this patch.
        all_touched: Rasterization rule.
    """

    patch_id: str
    image: Path
    mask_out: Path
    plan_farm_ids: tuple[str, ...]
    all_touched: bool


@dataclass(frozen=True)
class PatchResult:
    """What one patch contributes to the index, the splits and the statistics.

    Attributes:
        patch_id: Plan id.
        epsg: The patch grid's EPSG code.
        centre: Patch centre ``(x, y)`` in that CRS, metres.
        footprint: Patch outline in EPSG:4326.
        farm_ids: Farms on the mask plus farms the plan listed (sorted, unique).
        farm_pixels: Pixels labelled farm.
        coverage: ``farm_pixels / (height * width)``.
        moments: Per-band moments of the valid (non-nodata) pixels, stored DN units.
    """

    patch_id: str
    epsg: int
    centre: tuple[float, float]
    footprint: BaseGeometry
    farm_ids: tuple[str, ...]
    farm_pixels: int
    coverage: float
    moments: BandMoments


def tile_patch(task: PatchTask, farms: gpd.GeoDataFrame) -> PatchResult:
    """Rasterize ``farms`` onto the patch's own grid, write the mask, measure the patch.

    Args:
        task: The patch.
        farms: All farms, EPSG:4326, with ``farm_id`` and a spatial index.

    Raises:
        RasterError: the image is unreadable or its bands are not :data:`BANDS`.
        PipelineError: the patch CRS has no EPSG code.
    """
    image, grid, _tags = read_patch(task.image)
    ids, geoms = farms_on_grid(farms, grid)
    mask = rasterize_mask(geoms, grid, all_touched=task.all_touched)
    write_cog(
        task.mask_out,
        mask[None],
        grid,
        band_names=("farm",),
        nodata=MASK_NODATA,
        overview_resampling="nearest",
        tags={"patch_id": task.patch_id, "all_touched": task.all_touched},
        encoding=MASK_ENCODING,
    )
    write_style(task.mask_out, mask_style("farm (label)"))
    left, bottom, right, top = grid.bounds
    pixels = int(mask.sum())
    epsg = grid.crs.to_epsg()
    if epsg is None:
        raise PipelineError(
            f"patch {task.image} has a CRS without EPSG code ({grid.crs}); "
            "patches must be in a UTM zone. Re-run make fetch."
        )
    return PatchResult(
        task.patch_id,
        int(epsg),
        ((left + right) / 2, (bottom + top) / 2),
        grid_footprint_lonlat(grid),
        tuple(sorted(set(ids) | set(task.plan_farm_ids))),
        pixels,
        pixels / mask.size,
        BandMoments.of(image, nodata=0),
    )


def skipped_by_reason(fetch_index: pd.DataFrame) -> Counter[str]:
    """``"<status>: <reason>"`` counts of the fetch index rows whose status is not ``ok``."""
    not_ok = fetch_index[fetch_index["status"] != "ok"]
    reasons = not_ok["reason"] if "reason" in not_ok.columns else [""] * len(not_ok)
    return Counter(f"{s}: {r}" for s, r in zip(not_ok["status"], reasons, strict=True))


@dataclass(frozen=True)
class TileFiles:
    """A tiled patch's files, relative to the run folder."""

    image: str
    scl: str
    mask: str


def tiles_table(
    results: Sequence[PatchResult],
    assignment: SplitAssignment,
    kinds: Mapping[str, str],
    files: Sequence[TileFiles],
) -> gpd.GeoDataFrame:
    """The tiles index: one row per patch (:data:`TILES_COLUMNS`), footprints in EPSG:4326.

    Args:
        results: Tiled patches.
        assignment: Their blocks, splits and groups (same order).
        kinds: Plan kind (``positive``, ``negative``, ...) by patch id.
        files: Their files (same order).
    """
    return gpd.GeoDataFrame(
        {
            "patch_id": [r.patch_id for r in results],
            "split": assignment.splits,
            "block": assignment.blocks,
            "group": [results[g].patch_id for g in assignment.groups],
            "kind": [kinds.get(r.patch_id, "unknown") for r in results],
            "image": [f.image for f in files],
            "scl": [f.scl for f in files],
            "mask": [f.mask for f in files],
            "coverage": [r.coverage for r in results],
            "farm_pixels": [r.farm_pixels for r in results],
            "farm_ids": [json.dumps(list(r.farm_ids)) for r in results],
        },
        geometry=[r.footprint for r in results],
        crs="EPSG:4326",
    )


def summary_per_split(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Patches, positive patches, distinct farms and farm pixels of each split."""
    out: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        part = table[table["split"] == split]
        farms = {f for ids in part["farm_ids"] for f in json.loads(ids)}
        out[split] = {
            "patches": len(part),
            "positives": int((part["farm_pixels"] > 0).sum()),
            "farms": len(farms),
            "farm_pixels": int(part["farm_pixels"].sum()),
        }
    return out


def farms_in_several_splits(table: pd.DataFrame) -> int:
    """Farms that appear in patches of more than one split (0 when the grouping works)."""
    where: dict[str, set[str]] = {}
    for ids, split in zip(table["farm_ids"], table["split"], strict=True):
        for f in json.loads(ids):
            where.setdefault(f, set()).add(split)
    return sum(len(s) > 1 for s in where.values())


def band_stats(results: Sequence[PatchResult], splits: Sequence[str]) -> dict[str, Any]:
    """Per-band mean/std (stored DN) over the train patches (all patches if none is train)."""
    chosen = [r for r, s in zip(results, splits, strict=True) if s == "train"]
    scope = "train"
    if not chosen:
        chosen, scope = list(results), "all (no patch fell in the train split)"
        log.warning("no train patch: band statistics computed over all %d patches", len(chosen))
    total = BandMoments.empty(len(BANDS))
    for r in chosen:
        total = total.merge(r.moments)
    return {
        "bands": list(BANDS),
        "mean": total.mean.tolist(),
        "std": total.std.tolist(),
        "n_pixels": int(total.n.min()) if len(total.n) else 0,
        "n_valid_per_band": [int(v) for v in total.n],
        "n_patches": len(chosen),
        "scope": scope,
    }
