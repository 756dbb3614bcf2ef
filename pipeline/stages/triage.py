"""triage stage: the model's map against the labels, as review tasks for people.

Reads ``labels/farms.gpkg``, the map's farms (``map/farms.gpkg``; predict's polygons when there
is no map, and the summary says so), and when present ``attribute/farms.gpkg`` and
``audit/flags.gpkg``. Writes ``triage/review.gpkg`` (layers ``candidates``: mapped farms with
no OSM farm, ranked by evidence; ``suspects``: OSM farms the model does not find or finds only
from their surroundings) and ``triage/review.geojson`` (one feature per review task). These
are exports for human review; nothing is uploaded (:mod:`pipeline.triage`). On a demo world
the summary also scores the lists against the planted truth (never used for the ranking).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.config import RunConfig
from pipeline.io import atomic_path, write_text
from pipeline.paths import RunPaths, WorldPaths
from pipeline.stages.base import StageOutput
from pipeline.triage.evidence import label_attribution, label_cues, object_attribution, object_cues
from pipeline.triage.inputs import (
    label_quicklooks,
    read_labels,
    read_objects,
    read_optional,
)
from pipeline.triage.overlap import cover, metric_crs
from pipeline.triage.ranking import candidates, suspects
from pipeline.triage.rasters import label_map_evidence
from pipeline.triage.review import (
    CANDIDATE_COLUMNS,
    SUSPECT_COLUMNS,
    geojson_text,
    layer,
    osm_fields,
    review_collection,
)

log = logging.getLogger(__name__)


def _write_review(paths: RunPaths, cands: gpd.GeoDataFrame, sus: gpd.GeoDataFrame) -> None:
    with atomic_path(paths.triage_review) as tmp:
        cands.to_file(tmp, layer="candidates", driver="GPKG")
        sus.to_file(tmp, layer="suspects", driver="GPKG", mode="a")
    write_text(paths.triage_geojson, geojson_text(review_collection(cands, sus)))


def _map_evidence(labels: gpd.GeoDataFrame, paths: RunPaths, source: str) -> pd.DataFrame:
    if source != "map":
        return pd.DataFrame({"map_prob": np.nan, "map_dates": ""}, index=labels.index)
    return label_map_evidence(labels, paths)


def _truth_score(
    cfg: RunConfig, cands: gpd.GeoDataFrame, sus: gpd.GeoDataFrame
) -> dict[str, Any] | None:
    """The lists scored against the demo world's planted truth (``None`` for real data)."""
    if cfg.world is None:
        return None
    from pipeline.demo.truth import load_truth
    from pipeline.triage.truth import score_triage

    truth = load_truth(WorldPaths(cfg.run.data_root, cfg.world.name).root)
    return score_triage(cands, sus, truth.farms, truth.ghosts).as_dict()


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Triage the labels against the model's farms; see the module docstring."""
    tc = cfg.triage
    labels = read_labels(paths, cfg.run.name)
    objects = read_objects(paths, cfg.run.name)
    attribution = read_optional(paths.attribution_farms, "farms")
    flags = read_optional(paths.flags_gpkg, "flags")
    crs = metric_crs(labels, objects.frame)
    lab_m, obj_m = labels.to_crs(crs), objects.frame.to_crs(crs)
    att_m, flags_m = attribution.to_crs(crs), flags.to_crs(crs)

    cands = candidates(
        objects.frame,
        cover(obj_m, lab_m, labels["farm_id"]),
        object_attribution(obj_m, att_m),
        object_cues(obj_m, flags_m),
        tc,
    )
    match_iou = cfg.map.match_iou if cfg.map.match_iou is not None else cfg.predict.match_iou
    sus = suspects(
        labels.assign(**osm_fields(labels), **_map_evidence(labels, paths, objects.source)),
        cover(lab_m, obj_m, objects.frame["object_id"]),
        label_attribution(attribution, labels["farm_id"]),
        label_cues(flags, labels["farm_id"]),
        tc,
        match_iou,
    )
    sus["quicklook"] = label_quicklooks(paths, sus["farm_id"])
    cands, sus = layer(cands, CANDIDATE_COLUMNS), layer(sus, SUSPECT_COLUMNS)
    _write_review(paths, cands, sus)
    if objects.note:
        log.warning("triage: %s", objects.note)
    log.info("triage: %d candidate(s), %d suspect label(s)", len(cands), len(sus))
    summary: dict[str, Any] = {
        "source": objects.source,
        "note": objects.note,
        "objects": len(objects.frame),
        "labels": len(labels),
        "candidates": len(cands),
        "suspects": len(sus),
        "suspect_reasons": dict(Counter(sus["reason"])),
        "attribution_rows": len(attribution),
        "flag_rows": len(flags),
        "top_candidates": list(cands["object_id"].head(tc.report_rows)),
        "top_suspects": list(sus["farm_id"].head(tc.report_rows)),
    }
    score = _truth_score(cfg, cands, sus)
    if score is not None:
        summary["truth_score"] = score
    return StageOutput([paths.triage_review, paths.triage_geojson], summary)
