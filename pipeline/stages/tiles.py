"""tiles stage: label masks on every fetched patch grid, spatial splits and band statistics.

A map over patches: :func:`tile_patch` is a pure per-patch function (read the image's grid and
pixels, rasterize the farms onto exactly that grid, write the mask, return small numbers), so the
loop in :func:`run` can be handed to Dask or a process pool unchanged. The reduce step groups
patches that overlap or share a farm (union-find), gives each group the split of its first
member's spatial block (:mod:`pipeline.geo.splits`), and merges the train patches' band moments.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from shapely.geometry.base import BaseGeometry

from pipeline.bands import BANDS
from pipeline.config import RunConfig
from pipeline.errors import MissingArtifactError, PipelineError
from pipeline.geo.masks import (
    BandMoments,
    farms_on_grid,
    grid_footprint_lonlat,
    rasterize_mask,
)
from pipeline.geo.plan import group_patches
from pipeline.geo.raster import read_patch, write_cog
from pipeline.geo.splits import SPLITS, block_id, block_split
from pipeline.io import atomic_dir, atomic_path, write_json
from pipeline.paths import RunPaths
from pipeline.stages.base import StageOutput

log = logging.getLogger(__name__)


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
    """
    image, grid, _tags = read_patch(task.image)
    ids, geoms = farms_on_grid(farms, grid)
    mask = rasterize_mask(geoms, grid, all_touched=task.all_touched)
    write_cog(
        task.mask_out,
        mask[None],
        grid,
        band_names=("farm",),
        nodata=None,
        overview_resampling="nearest",
        tags={"patch_id": task.patch_id, "all_touched": task.all_touched},
    )
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


def assign_splits(
    results: list[PatchResult],
    block_size_m: float,
    fractions: tuple[float, float, float],
    seed: int,
) -> tuple[list[str], list[str], list[int]]:
    """Split per patch: its group's first member's block, hashed with ``seed``.

    Returns:
        ``(block id per patch, split per patch, group id per patch)``; groups are numbered by
        their first member's position in ``results``.
    """
    blocks = [block_id(r.epsg, *r.centre, block_size_m) for r in results]
    groups = group_patches([r.footprint for r in results], [r.farm_ids for r in results])
    splits: list[str] = [block_split(blocks[g], fractions, seed) for g in groups]
    return blocks, splits, groups


def _read_inputs(paths: RunPaths) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, gpd.GeoDataFrame]:
    for what, path, target in (
        ("farms", paths.farms, "labels"),
        ("plan", paths.plan, "labels"),
        ("fetch index", paths.fetch_index, "fetch"),
    ):
        if not path.is_file():
            raise MissingArtifactError(f"the {what}", path, target)
    farms = gpd.read_file(paths.farms, layer="farms").to_crs(4326)
    plan = gpd.read_file(paths.plan, layer="plan")
    index = gpd.read_file(paths.fetch_index, layer="patches")
    missing = {"patch_id", "status", "image", "scl"} - set(index.columns)
    if missing:
        raise PipelineError(
            f"{paths.fetch_index} lacks column(s) {sorted(missing)}; it was written by an "
            "older fetch stage. Re-run `make fetch` (with --force)."
        )
    return farms, plan, index


def _summary_per_split(table: pd.DataFrame) -> dict[str, dict[str, int]]:
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


def _farms_in_several_splits(table: pd.DataFrame) -> int:
    where: dict[str, set[str]] = {}
    for ids, split in zip(table["farm_ids"], table["split"], strict=True):
        for f in json.loads(ids):
            where.setdefault(f, set()).add(split)
    return sum(len(s) > 1 for s in where.values())


def band_stats(results: list[PatchResult], splits: list[str]) -> dict[str, Any]:
    """Per-band mean/std (stored DN) over the train patches (all patches if none is train)."""
    chosen = [r for r, s in zip(results, splits, strict=True) if s == "train"]
    scope = "train"
    if not chosen:
        chosen, scope = results, "all (no patch fell in the train split)"
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


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Masks, splits, index and band statistics for every fetched patch.

    Raises:
        MissingArtifactError: farms, plan or fetch index missing.
        RasterError: a fetched patch is unreadable.
    """
    tc = cfg.tiles
    farms, plan, index = _read_inputs(paths)
    plan_ids = {
        pid: tuple(json.loads(ids))
        for pid, ids in zip(plan["patch_id"], plan["farm_ids"], strict=True)
    }
    kinds = dict(zip(plan["patch_id"], plan["kind"], strict=True))
    ok = index[index["status"] == "ok"].sort_values("patch_id", kind="stable")
    not_ok = index[index["status"] != "ok"]
    reasons = not_ok["reason"] if "reason" in not_ok.columns else [""] * len(not_ok)
    skipped = Counter(f"{s}: {r}" for s, r in zip(not_ok["status"], reasons, strict=True))
    masks_dir = paths.mask("x").parent
    results: list[PatchResult] = []
    rows_io: list[tuple[str, str]] = []
    with atomic_dir(masks_dir) as tmp:
        for pid, image, scl in zip(ok["patch_id"], ok["image"], ok["scl"], strict=True):
            task = PatchTask(
                pid,
                paths.root / image,
                tmp / paths.mask(pid).name,
                plan_ids.get(pid, ()),
                tc.all_touched,
            )
            results.append(tile_patch(task, farms))
            rows_io.append((image, scl))
    if not results:
        raise PipelineError(
            f"no fetched patch has status 'ok' in {paths.fetch_index} "
            f"({dict(skipped)}); nothing to tile. Fix the fetch stage's inputs and re-run "
            "`make fetch`."
        )
    plan_block = float(plan["block_m"].iloc[0]) if "block_m" in plan.columns else 0.0
    if plan_block and plan_block != tc.block_size_m:
        log.warning(
            "the plan kept patches inside %g m blocks but tiles.block_size_m is %g: set "
            "labels.block_size_m to %g and re-run labels, or split groups may grow large",
            plan_block,
            tc.block_size_m,
            tc.block_size_m,
        )
    blocks, splits, groups = assign_splits(
        results, tc.block_size_m, tc.split_fractions, cfg.split_seed
    )
    table = gpd.GeoDataFrame(
        {
            "patch_id": [r.patch_id for r in results],
            "split": splits,
            "block": blocks,
            "group": [results[g].patch_id for g in groups],
            "kind": [kinds.get(r.patch_id, "unknown") for r in results],
            "image": [io[0] for io in rows_io],
            "scl": [io[1] for io in rows_io],
            "mask": [paths.relative(paths.mask(r.patch_id)) for r in results],
            "coverage": [r.coverage for r in results],
            "farm_pixels": [r.farm_pixels for r in results],
            "farm_ids": [json.dumps(list(r.farm_ids)) for r in results],
        },
        geometry=[r.footprint for r in results],
        crs="EPSG:4326",
    )
    stats = band_stats(results, splits)
    with atomic_path(paths.tiles_index) as tmp_index:
        table.to_file(tmp_index, layer="tiles", driver="GPKG")
    write_json(paths.band_stats, stats)
    summary = {
        "patches": len(results),
        "skipped": sum(skipped.values()),
        "skipped_by_reason": dict(skipped),
        "per_split": _summary_per_split(table),
        "groups": len(set(groups)),
        "farms_in_several_splits": _farms_in_several_splits(table),
        "mean_coverage": float(table["coverage"].mean()),
        "all_touched": tc.all_touched,
        "band_stats_scope": stats["scope"],
        "largest_group": max(Counter(groups).values()),
        "plan_block_m": plan_block,
        "block_size_m": tc.block_size_m,
    }
    log.info(
        "tiles: %d masks, splits %s",
        len(results),
        {k: v["patches"] for k, v in summary["per_split"].items()},
    )
    return StageOutput([masks_dir, paths.tiles_index, paths.band_stats], summary)
