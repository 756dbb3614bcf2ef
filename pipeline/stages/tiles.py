"""tiles stage: label masks on every fetched patch grid, spatial splits and band statistics.

A map over patches (:func:`pipeline.geo.tiling.tile_patch`: rasterize the farms onto exactly the
patch's grid, write the mask, return small numbers) then a reduce: patches that overlap or
share a farm share the split of their first member's spatial block
(:func:`pipeline.geo.splits.assign_splits`), and the train patches' band moments are merged.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import geopandas as gpd

from pipeline.config import RunConfig
from pipeline.errors import MissingArtifactError, PipelineError
from pipeline.geo.splits import assign_splits
from pipeline.geo.styles import mask_style
from pipeline.geo.tiling import (
    PatchResult,
    PatchTask,
    TileFiles,
    band_stats,
    farms_in_several_splits,
    skipped_by_reason,
    summary_per_split,
    tile_patch,
    tiles_table,
)
from pipeline.geo.vrt import zone_vrts
from pipeline.io import atomic_dir, atomic_path, write_json
from pipeline.paths import RunPaths
from pipeline.stages.base import StageOutput

log = logging.getLogger(__name__)


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


def tile_patches(
    paths: RunPaths,
    farms: gpd.GeoDataFrame,
    plan: gpd.GeoDataFrame,
    index: gpd.GeoDataFrame,
    all_touched: bool,
) -> tuple[list[PatchResult], list[TileFiles]]:
    """Tile every ``ok`` patch of the fetch index (by patch id); the masks appear together."""
    plan_ids = {
        pid: tuple(json.loads(ids))
        for pid, ids in zip(plan["patch_id"], plan["farm_ids"], strict=True)
    }
    ok = index[index["status"] == "ok"].sort_values("patch_id", kind="stable")
    results: list[PatchResult] = []
    files: list[TileFiles] = []
    with atomic_dir(paths.masks_dir) as tmp:
        for pid, image, scl in zip(ok["patch_id"], ok["image"], ok["scl"], strict=True):
            mask = paths.mask(pid)
            farm_ids = plan_ids.get(pid, ())
            task = PatchTask(pid, paths.resolve(image), tmp / mask.name, farm_ids, all_touched)
            results.append(tile_patch(task, farms))
            files.append(TileFiles(image, scl, paths.relative(mask)))
    return results, files


def plan_block(plan: gpd.GeoDataFrame, block_size_m: float) -> float:
    """The block size the plan kept patches in (0 if unknown); warns when tiles differs."""
    block = float(plan["block_m"].iloc[0]) if "block_m" in plan.columns else 0.0
    if block and block != block_size_m:
        log.warning(
            "the plan kept patches inside %g m blocks but tiles.block_size_m is %g: set "
            "labels.block_size_m to %g and re-run labels, or split groups may grow large",
            block,
            block_size_m,
            block_size_m,
        )
    return block


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Masks, splits, index and band statistics for every fetched patch.

    Raises:
        MissingArtifactError: farms, plan or fetch index missing.
        RasterError: a fetched patch is unreadable.
        PipelineError: no fetched patch is ``ok``.
    """
    tc = cfg.tiles
    farms, plan, index = _read_inputs(paths)
    skipped = skipped_by_reason(index)
    results, files = tile_patches(paths, farms, plan, index, tc.all_touched)
    if not results:
        raise PipelineError(
            f"no fetched patch has status 'ok' in {paths.fetch_index} "
            f"({dict(skipped)}); nothing to tile. Fix the fetch stage's inputs and re-run "
            "`make fetch`."
        )
    block_m = plan_block(plan, tc.block_size_m)
    assignment = assign_splits(results, tc.block_size_m, tc.split_fractions, cfg.split_seed)
    kinds = dict(zip(plan["patch_id"], plan["kind"], strict=True))
    table = tiles_table(results, assignment, kinds, files)
    stats = band_stats(results, assignment.splits)
    with atomic_path(paths.tiles_index) as tmp_index:
        table.to_file(tmp_index, layer="tiles", driver="GPKG")
    write_json(paths.band_stats, stats)
    masks = [paths.mask(r.patch_id) for r in results]
    vrts = zone_vrts(masks, paths.masks_vrt, lambda _vrt: mask_style("farm (label)"))
    summary = {
        "patches": len(results),
        "skipped": sum(skipped.values()),
        "skipped_by_reason": dict(skipped),
        "per_split": summary_per_split(table),
        "groups": len(set(assignment.groups)),
        "farms_in_several_splits": farms_in_several_splits(table),
        "mean_coverage": float(table["coverage"].mean()),
        "all_touched": tc.all_touched,
        "band_stats_scope": stats["scope"],
        "largest_group": max(Counter(assignment.groups).values()),
        "plan_block_m": block_m,
        "block_size_m": tc.block_size_m,
    }
    log.info(
        "tiles: %d masks, splits %s",
        len(results),
        {k: v["patches"] for k, v in summary["per_split"].items()},
    )
    return StageOutput([paths.masks_dir, paths.tiles_index, paths.band_stats, *vrts], summary)
