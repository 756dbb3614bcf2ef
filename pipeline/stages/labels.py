"""labels stage: OSM solar farms -> farms.gpkg, rejected.gpkg and the patch plan.

Reads an OSM extract with pyosmium (``labels.source: file``) or queries Overpass
(``labels.source: overpass``, cached under ``<data_root>/cache/overpass/``;
:mod:`pipeline.osm.source`), repairs and merges
the features into farms (:mod:`pipeline.osm.geometry`), and plans 256 x 256 patches
(:mod:`pipeline.geo.plan`). All three GeoPackages are computed first and renamed into place
together, so a failure leaves the previous outputs untouched.
"""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import geopandas as gpd
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from pipeline.config import RunConfig
from pipeline.config.labels import LabelsConfig
from pipeline.errors import LabelsError
from pipeline.geo.aoi import aoi_from_bbox, aoi_from_file
from pipeline.geo.plan import MapNegatives, PlanParams, plan_patches, read_hard_points
from pipeline.geo.splits import block_splitter
from pipeline.io import atomic_path
from pipeline.osm.geometry import FarmRules, build_farms
from pipeline.osm.source import read_solar_features
from pipeline.paths import RunPaths
from pipeline.stages.base import StageOutput
from pipeline.triage.feedback import hard_negative_objects, object_points, read_review

log = logging.getLogger(__name__)


def configured_aoi(lc: LabelsConfig) -> BaseGeometry | None:
    """The AOI from ``aoi_bbox``/``aoi_crs`` or ``aoi_file`` (EPSG:4326), or ``None``."""
    if lc.aoi_bbox is not None:
        return aoi_from_bbox(lc.aoi_bbox, lc.aoi_crs)
    if lc.aoi_file is not None:
        return aoi_from_file(lc.aoi_file)
    return None


def farm_rules(lc: LabelsConfig) -> FarmRules:
    """Repair and merge rules, with the source name written into every farm."""
    source = (
        f"osm-file:{Path(str(lc.osm_file)).name}"
        if lc.source == "file"
        else f"overpass:{lc.overpass_url}"
    )
    return FarmRules(
        lc.min_area_m2, lc.generator_merge_fraction, lc.generator_cluster_gap_m, source
    )


def plan_params(lc: LabelsConfig) -> PlanParams:
    """Patch size, negatives and blocks of the plan."""
    return PlanParams(
        size=lc.patch_size,
        gsd=lc.gsd,
        negatives_per_positive=lc.negatives_per_positive,
        negative_buffer_m=lc.negative_buffer_m,
        max_negative_overlap=lc.negative_max_overlap,
        block_m=lc.block_size_m,
    )


def map_negatives(lc: LabelsConfig) -> tuple[MapNegatives | None, dict[str, object]]:
    """``labels.hard_negatives``: the earlier triage's non-farms as plan input, and a summary."""
    hc = lc.hard_negatives
    if hc is None:
        return None, {}
    review = read_review(hc.review, "labels.hard_negatives.review")
    objects = hard_negative_objects(review, hc)
    split_at = block_splitter(hc.block_size_m, hc.split_fractions, hc.split_seed)
    info = {
        "review": str(hc.review),
        "review_sha256": review.sha256,
        "objects": len(objects),
        "objects_by_reason": dict(Counter(w.split(" ")[0] for w in objects["why"])),
    }
    points = object_points(objects)
    return MapNegatives(points, hc.max_patches, split_at, frozenset(hc.splits)), info


def rejected_summary(rejected: gpd.GeoDataFrame) -> dict[str, object]:
    """Rejections counted by reason (text before ``:``) and the first 200 ids (``w123``)."""
    reasons: dict[str, int] = {}
    for reason in rejected["reason"]:
        key = reason.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    ids = [f"{t[0]}{i}" for t, i in zip(rejected["osm_type"], rejected["osm_id"], strict=True)]
    return {"rejected_by_reason": reasons, "rejected_ids": ids[:200]}


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Build farms and the patch plan (see module docstring).

    Raises:
        LabelsError: empty AOI, no solar features, no farm left in the AOI, malformed input.
        FetchError: the Overpass endpoint failed after retries.
    """
    lc = cfg.labels
    cache = paths.overpass_cache if lc.overpass_cache else None
    found = read_solar_features(lc, configured_aoi(lc), cache)
    features, aoi, info = found.features, found.aoi, dict(found.info)
    where = lc.osm_file if lc.source == "file" else lc.overpass_url
    if not features:
        raise LabelsError(
            f"no solar features (power=plant + plant:source=solar, or power=generator + "
            f"generator:source=solar / generator:method=photovoltaic) in {where}"
            + (f" within the AOI {tuple(round(v, 5) for v in aoi.bounds)}" if aoi else "")
            + ". Check the extract or widen the AOI."
        )
    result = build_farms(features, farm_rules(lc), aoi)
    if result.farms.empty:
        raise LabelsError(
            f"{len(features)} solar features in {where} but no farm is left in the AOI after "
            f"repair and filtering ({result.counts['outside_aoi']} outside the AOI, "
            f"{result.counts['below_min_area']} below labels.min_area_m2={lc.min_area_m2:g}, "
            f"{result.counts['broken']} broken). Widen the AOI or lower labels.min_area_m2."
        )
    if aoi is None:
        aoi = box(*result.farms.total_bounds)
        info["aoi_from"] = "farm bounds"
    from_map, from_map_info = map_negatives(lc)
    plan = plan_patches(
        result.farms,
        aoi,
        plan_params(lc),
        cfg.run.seed,
        read_hard_points(lc.hard_negatives_file),
        lc.max_hard_negatives,
        from_map,
    )
    if plan.counts["negatives_shortfall"]:
        log.warning(
            "only %d of %d negatives fit in the AOI away from farms",
            plan.counts["negatives"],
            plan.counts["negatives_wanted"],
        )
    with ExitStack() as stack:
        tmp_farms = stack.enter_context(atomic_path(paths.farms))
        tmp_rejected = stack.enter_context(atomic_path(paths.rejected))
        tmp_plan = stack.enter_context(atomic_path(paths.plan))
        tmp_aoi = stack.enter_context(atomic_path(paths.aoi))
        result.farms.to_file(tmp_farms, layer="farms", driver="GPKG")
        result.rejected.to_file(tmp_rejected, layer="rejected", driver="GPKG")
        plan.patches.to_file(tmp_plan, layer="plan", driver="GPKG")
        gpd.GeoDataFrame(geometry=[aoi], crs=4326).to_file(tmp_aoi, layer="aoi", driver="GPKG")
    summary = {
        **info,
        "aoi_bounds": [round(v, 7) for v in aoi.bounds],
        "aoi_area_deg2": shapely.area(aoi),
        **{f"farms_{k}" if k in ("features",) else k: v for k, v in result.counts.items()},
        **rejected_summary(result.rejected),
        "plan": plan.counts,
        **({"hard_negatives_from_map": from_map_info} if from_map_info else {}),
    }
    log.info(
        "labels: %d farms, %d rejected, %d positive + %d negative patches",
        len(result.farms),
        len(result.rejected),
        plan.counts["positives"],
        plan.counts["negatives"] + plan.counts["hard_negatives"],
    )
    return StageOutput([paths.farms, paths.rejected, paths.plan, paths.aoi], summary)
