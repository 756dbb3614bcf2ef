"""labels stage: OSM solar farms -> farms.gpkg, rejected.gpkg and the patch plan.

Reads an OSM extract with pyosmium (``labels.source: file``) or queries Overpass
(``labels.source: overpass``, cached under ``<data_root>/cache/overpass/``), repairs and merges
the features into farms (:mod:`pipeline.osm.geometry`), and plans 256 x 256 patches
(:mod:`pipeline.geo.plan`). All three GeoPackages are computed first and renamed into place
together, so a failure leaves the previous outputs untouched.
"""

from __future__ import annotations

import logging
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
from pipeline.geo.plan import PlanParams, plan_patches
from pipeline.io import atomic_path
from pipeline.osm.extract import read_extract
from pipeline.osm.features import OsmFeature
from pipeline.osm.geometry import FarmRules, build_farms
from pipeline.osm.overpass import OverpassClient, build_query
from pipeline.paths import RunPaths
from pipeline.stages.base import StageOutput

log = logging.getLogger(__name__)


def overpass_cache_dir(cfg: RunConfig) -> Path:
    """``<data_root>/cache/overpass/``: responses keyed by the query's SHA-256."""
    return cfg.run.data_root / "cache" / "overpass"


def configured_aoi(lc: LabelsConfig) -> BaseGeometry | None:
    """The AOI from ``aoi_bbox``/``aoi_crs`` or ``aoi_file`` (EPSG:4326), or ``None``."""
    if lc.aoi_bbox is not None:
        return aoi_from_bbox(lc.aoi_bbox, lc.aoi_crs)
    if lc.aoi_file is not None:
        return aoi_from_file(lc.aoi_file)
    return None


def read_features(
    cfg: RunConfig, aoi: BaseGeometry | None
) -> tuple[list[OsmFeature], BaseGeometry | None, dict[str, object]]:
    """Solar features from the configured source, the AOI to use, and source facts.

    Raises:
        LabelsError: unreadable extract or malformed Overpass response.
        FetchError: Overpass unreachable after retries.
    """
    lc = cfg.labels
    if lc.source == "file":
        assert lc.osm_file is not None  # guaranteed by LabelsConfig's validator
        result = read_extract(lc.osm_file)
        info: dict[str, object] = {
            "source": "file",
            "osm_file": str(lc.osm_file),
            "header_bbox": result.header_bbox,
        }
        if aoi is None and result.header_bbox is not None:
            aoi = box(*result.header_bbox)
            info["aoi_from"] = "extract header bbox"
        return result.features, aoi, info
    assert aoi is not None  # LabelsConfig requires an AOI for overpass
    client = OverpassClient(
        lc.overpass_url,
        timeout_s=lc.timeout_s,
        retries=lc.retries,
        backoff_s=lc.backoff_s,
        max_backoff_s=lc.max_backoff_s,
        cache_dir=overpass_cache_dir(cfg) if lc.overpass_cache else None,
    )
    query = build_query(aoi.bounds, timeout_s=lc.timeout_s, fmt=lc.overpass_format)
    features, cached = client.fetch(query, lc.overpass_format)
    return (
        features,
        aoi,
        {
            "source": "overpass",
            "url": lc.overpass_url,
            "from_cache": cached,
            "format": lc.overpass_format,
        },
    )


def _hard_points(path: Path | None) -> list[tuple[float, float]]:
    if path is None:
        return []
    if not path.is_file():
        raise LabelsError(
            f"labels.hard_negatives_file {path} does not exist; point it at a "
            "vector file of hard negatives (e.g. predict/false_positives.gpkg) or "
            "remove the key"
        )
    gdf = gpd.read_file(path)
    if gdf.crs is None:
        raise LabelsError(f"labels.hard_negatives_file {path} declares no CRS; save it with one")
    pts = gdf.to_crs(4326).geometry.representative_point()
    return [(p.x, p.y) for p in pts if p is not None and not p.is_empty]


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Build farms and the patch plan (see module docstring).

    Raises:
        LabelsError: empty AOI, no solar features, no farm left in the AOI, malformed input.
        FetchError: the Overpass endpoint failed after retries.
    """
    lc = cfg.labels
    aoi = configured_aoi(lc)
    features, aoi, info = read_features(cfg, aoi)
    where = lc.osm_file if lc.source == "file" else lc.overpass_url
    if not features:
        raise LabelsError(
            f"no solar features (power=plant + plant:source=solar, or power=generator + "
            f"generator:source=solar / generator:method=photovoltaic) in {where}"
            + (f" within the AOI {tuple(round(v, 5) for v in aoi.bounds)}" if aoi else "")
            + ". Check the extract or widen the AOI."
        )
    source = (
        f"osm-file:{Path(str(lc.osm_file)).name}"
        if lc.source == "file"
        else f"overpass:{lc.overpass_url}"
    )
    rules = FarmRules(
        lc.min_area_m2, lc.generator_merge_fraction, lc.generator_cluster_gap_m, source
    )
    result = build_farms(features, rules, aoi)
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
    params = PlanParams(
        size=lc.patch_size,
        gsd=lc.gsd,
        negatives_per_positive=lc.negatives_per_positive,
        negative_buffer_m=lc.negative_buffer_m,
        max_negative_overlap=lc.negative_max_overlap,
        block_m=lc.block_size_m,
    )
    plan = plan_patches(
        result.farms,
        aoi,
        params,
        cfg.run.seed,
        _hard_points(lc.hard_negatives_file),
        lc.max_hard_negatives,
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
    reasons: dict[str, int] = {}
    for reason in result.rejected["reason"]:
        key = reason.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    summary = {
        **info,
        "aoi_bounds": [round(v, 7) for v in aoi.bounds],
        "aoi_area_deg2": shapely.area(aoi),
        **{f"farms_{k}" if k in ("features",) else k: v for k, v in result.counts.items()},
        "rejected_by_reason": reasons,
        "rejected_ids": [
            f"{t[0]}{i}"
            for t, i in zip(result.rejected["osm_type"], result.rejected["osm_id"], strict=True)
        ][:200],
        "plan": plan.counts,
    }
    log.info(
        "labels: %d farms, %d rejected, %d positive + %d negative patches",
        len(result.farms),
        len(result.rejected),
        plan.counts["positives"],
        plan.counts["negatives"] + plan.counts["hard_negatives"],
    )
    return StageOutput([paths.farms, paths.rejected, paths.plan, paths.aoi], summary)
