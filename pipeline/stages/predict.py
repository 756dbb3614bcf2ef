"""predict stage: model + patches -> probability and mask COGs, farm polygons, evaluation.

Pass 1 writes every patch's probability COG by sliding window and collects probability
histograms per split; the threshold is then fixed (config number, the model's, or re-derived
on the validation split); pass 2 writes masks and scores each patch against its tiles mask
(:func:`pipeline.model.scoring.score_patch`): pixel counts, object matches, predicted farms,
false positives and missed farms. Rasters listed in ``predict.rasters`` are predicted too.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rasterio.crs import CRS

from pipeline.config import PredictConfig, RunConfig
from pipeline.geo.raster import read_raster
from pipeline.geo.styles import mask_style, probability_style
from pipeline.geo.vrt import zone_vrts
from pipeline.io import atomic_path, write_json
from pipeline.manifest import manifest_digest
from pipeline.model.evaluate import (
    ThresholdSweep,
    plot_evaluation,
    resolve_threshold,
    split_metrics,
)
from pipeline.model.io import ModelMeta, load_model
from pipeline.model.polygons import to_wgs84, write_polygons
from pipeline.model.records import SPLIT_NAMES, TileRecord, read_label_mask, read_tiles_index
from pipeline.model.scene import PredictJob, predict_scene
from pipeline.model.scoring import (
    PatchScore,
    ScoringRules,
    metrics_report,
    score_patch,
    tally_splits,
)
from pipeline.model.window import Predictor, WindowSpec, resolve_device
from pipeline.paths import RunPaths
from pipeline.stages.base import StageOutput

log = logging.getLogger(__name__)


def predict_job(pcfg: PredictConfig, predictor: Predictor, meta: ModelMeta) -> PredictJob:
    """The run's window settings, expected CRS and probability-raster tags."""
    return PredictJob(
        predictor,
        WindowSpec(pcfg.window, pcfg.overlap, pcfg.blend, pcfg.batch_size),
        CRS.from_epsg(pcfg.expected_epsg) if pcfg.expected_epsg else None,
        {
            "model_data_digest": meta.data_digest,
            "window": pcfg.window,
            "overlap": pcfg.overlap,
            "blend": pcfg.blend,
        },
    )


def predict_probabilities(
    records: list[TileRecord], paths: RunPaths, job: PredictJob
) -> tuple[dict[str, ThresholdSweep], int, int]:
    """Pass 1: every patch's probability COG, and probability histograms per split.

    Returns:
        ``(sweep by split, windows predicted, nodata pixels)``.
    """
    sweeps = {s: ThresholdSweep() for s in SPLIT_NAMES}
    windows = nodata = 0
    for record in records:
        info = job.probability(record.image, paths.probability(record.patch_id))
        windows += info.windows
        nodata += info.nodata_pixels
        prob, _, _ = read_raster(paths.probability(record.patch_id))
        sweeps[record.split].update(prob[0], read_label_mask(record, info.grid))
    return sweeps, windows, nodata


def threshold_and_score(record: TileRecord, paths: RunPaths, rules: ScoringRules) -> PatchScore:
    """Pass 2 for one patch: write its mask COG and score it against its label mask."""
    pid = record.patch_id
    PredictJob.mask(paths.probability(pid), paths.predicted_mask(pid), rules.threshold)
    prob, grid, _ = read_raster(paths.probability(pid))
    truth = read_label_mask(record, grid)
    return score_patch(prob[0], truth, grid, patch_id=pid, split=record.split, rules=rules)


def write_polygon_layers(paths: RunPaths, scores: list[PatchScore]) -> int:
    """``farms.gpkg``, ``false_positives.gpkg``, ``missed.gpkg`` in EPSG:4326; farm count."""
    farms = to_wgs84([s.farms for s in scores]).rename(columns={"id": "pred_id"})
    write_polygons(farms, paths.predicted_farms, "farms")
    write_polygons(
        to_wgs84([s.false_positives for s in scores]), paths.false_positives, "false_positives"
    )
    write_polygons(to_wgs84([s.missed for s in scores]), paths.missed_farms, "missed")
    return len(farms)


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Predict every patch of the tiles index, polygonize, evaluate."""
    pcfg = cfg.predict
    start = time.perf_counter()
    records = read_tiles_index(paths.tiles_index, paths.root)
    device = resolve_device(pcfg.device)
    model, meta = load_model(paths.model, device=device)
    tiles_digest = manifest_digest(paths.manifest("tiles"))
    if meta.data_digest != tiles_digest:
        log.warning(
            "the model was trained on other tiles (digest %s, now %s); predictions are "
            "still valid for these patches, but `make train` would refresh the model",
            meta.data_digest[:12],
            tiles_digest[:12],
        )
    predictor = Predictor(model, meta, device, pcfg.batch_size)
    job = predict_job(pcfg, predictor, meta)

    sweeps, windows, nodata = predict_probabilities(records, paths, job)
    threshold, rule = resolve_threshold(pcfg.threshold, meta.threshold, sweeps["val"])
    log.info("threshold %.3f (%s)", threshold, rule)
    rules = ScoringRules(threshold, rule, pcfg.min_polygon_area_m2, pcfg.match_iou)
    scores = [threshold_and_score(record, paths, rules) for record in records]
    scenes = {Path(src).name: predict_scene(Path(src), paths, job, rules) for src in pcfg.rasters}

    polygons = write_polygon_layers(paths, scores)
    vrts = zone_vrts(
        [paths.probability(r.patch_id) for r in records],
        paths.probability_vrt,
        lambda _vrt: probability_style(),
    ) + zone_vrts(
        [paths.predicted_mask(r.patch_id) for r in records],
        paths.predicted_mask_vrt,
        lambda _vrt: mask_style("farm (predicted)"),
    )
    pixel, objects = split_metrics(*tally_splits(scores, SPLIT_NAMES), sweeps)
    metrics = metrics_report(rules, pixel, objects, len(records), meta.data_digest, tiles_digest)
    write_json(paths.metrics, metrics)
    with atomic_path(paths.metrics_plot) as tmp:
        plot_evaluation({s: sweeps[s] for s in pixel}, threshold, pixel, tmp)
    summary = {
        "patches": len(records),
        "windows": windows,
        "nodata_pixels": nodata,
        "threshold": threshold,
        "threshold_rule": rule,
        "pixel_iou": {s: m["iou"] for s, m in pixel.items()},
        "object_precision": {s: m["precision"] for s, m in objects.items()},
        "object_recall": {s: m["recall"] for s, m in objects.items()},
        "polygons": polygons,
        "false_positives": sum(len(s.false_positives) for s in scores),
        "missed": sum(len(s.missed) for s in scores),
        "device": str(device),
        "batch_size_final": predictor.batch_size,
        "oom_halvings": predictor.halvings,
        "model_matches_tiles": metrics["model_matches_tiles"],
        "rasters": scenes,
        "seconds": round(time.perf_counter() - start, 2),
    }
    outputs = [
        paths.predicted_farms,
        paths.metrics,
        paths.false_positives,
        paths.missed_farms,
        paths.metrics_plot,
        paths.probability_dir,
        paths.predicted_mask_dir,
        *([paths.predicted_rasters_dir] if scenes else []),
        *vrts,
    ]
    return StageOutput(outputs=outputs, summary=summary)
