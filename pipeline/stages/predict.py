"""predict stage: model + patches -> probability and mask COGs, farm polygons, evaluation.

Pass 1 writes every patch's probability COG by sliding window and collects probability
histograms per split; the threshold is then fixed (config number, the model's, or re-derived
on the validation split); pass 2 writes masks, polygonizes, and scores pixels and objects
against the tiles masks. Extra outputs beside those named by ``RunPaths``:
``predict/false_positives.gpkg``, ``predict/missed.gpkg`` and ``predict/metrics.png``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.crs import CRS

from pipeline.config import PredictConfig, RunConfig
from pipeline.errors import GeoMismatchError, RasterError
from pipeline.geo.raster import Grid, read_raster
from pipeline.io import atomic_path, write_json
from pipeline.manifest import manifest_digest
from pipeline.model.evaluate import (
    ObjectCounts,
    PixelCounts,
    ThresholdSweep,
    components,
    match_objects,
    pixel_counts,
    plot_evaluation,
)
from pipeline.model.io import ModelMeta, load_model
from pipeline.model.polygons import empty_polygons, labels_to_polygons, mask_to_polygons
from pipeline.model.records import SPLIT_NAMES, TileRecord, read_tiles_index
from pipeline.model.window import (
    Predictor,
    WindowSpec,
    predict_raster,
    resolve_device,
    threshold_raster,
)
from pipeline.paths import RunPaths
from pipeline.stages.base import StageOutput

log = logging.getLogger(__name__)


def extra_paths(paths: RunPaths) -> dict[str, Path]:
    """Outputs of this stage that :class:`RunPaths` does not name."""
    base = paths.stage_dir("predict")
    return {
        "false_positives": base / "false_positives.gpkg",
        "missed": base / "missed.gpkg",
        "plot": base / "metrics.png",
    }


def read_truth(record: TileRecord, grid: Grid) -> np.ndarray:
    """The label mask of ``record`` as bool ``(H, W)``, checked to lie on ``grid``.

    Raises:
        GeoMismatchError: the mask's CRS, transform or shape differ from the image's.
    """
    mask, mgrid, _ = read_raster(record.mask)
    if mgrid != grid:
        raise GeoMismatchError(
            f"label mask {record.mask} is on {mgrid.crs} {mgrid.transform} {mgrid.shape} but "
            f"patch {record.image} is on {grid.crs} {grid.transform} {grid.shape}; re-run "
            "`make tiles` so masks are rasterized on the patch grids"
        )
    return mask[0] > 0


def resolve_threshold(
    pcfg: PredictConfig, meta: ModelMeta, val_sweep: ThresholdSweep
) -> tuple[float, str]:
    """``(threshold, rule)`` from the config: a number, the model's, or validation-optimal."""
    if pcfg.threshold == "model":
        return float(meta.threshold), "model"
    if pcfg.threshold == "auto":
        if val_sweep.pos.sum() == 0:
            log.warning("no farm pixels in the validation split; using the model's threshold")
            return float(meta.threshold), "model (no validation positives)"
        return val_sweep.best("iou")[0], "validation-optimal IoU"
    return float(pcfg.threshold), "config"


def _to_wgs84(frames: Sequence[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    parts = [f.to_crs(4326) for f in frames if len(f)]
    if not parts:
        return empty_polygons()
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs="EPSG:4326")


def write_gpkg(frame: gpd.GeoDataFrame, path: Path, layer: str) -> Path:
    """Write one layer atomically (an empty table keeps its columns and polygon type)."""
    with atomic_path(path) as tmp:
        frame.to_file(
            tmp, layer=layer, driver="GPKG", geometry_type="Polygon" if frame.empty else None
        )
    return path


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in d.items()}


def predict_scene(
    src: Path,
    paths: RunPaths,
    predictor: Predictor,
    spec: WindowSpec,
    threshold: float,
    expected: CRS | None,
    tags: dict[str, Any],
    pcfg: PredictConfig,
) -> tuple[Path, int]:
    """Probability, mask and polygons of one extra raster (``predict.rasters``).

    Returns:
        ``(src, number of predicted farm polygons)``.

    Raises:
        RasterError: the raster is missing or unreadable (names the config key to fix).
    """
    if not src.is_file():
        raise RasterError(
            f"predict.rasters lists {src}, which does not exist; fix the path or remove it"
        )
    out = paths.stage_dir("predict") / "rasters"
    prob_path, mask_path = out / f"{src.stem}_probability.tif", out / f"{src.stem}_mask.tif"
    info = predict_raster(src, prob_path, predictor, spec, expected_crs=expected, tags=tags)
    threshold_raster(prob_path, mask_path, threshold)
    prob, grid, _ = read_raster(prob_path)
    pred = np.nan_to_num(prob[0], nan=0.0) >= threshold
    polys, _ = mask_to_polygons(
        pred, grid, patch_id=src.stem, prob=prob[0], min_area_m2=pcfg.min_polygon_area_m2
    )
    write_gpkg(_to_wgs84([polys]), out / f"{src.stem}_farms.gpkg", "farms")
    log.info("predicted %s: %d windows, %d farm polygons", src, info.windows, len(polys))
    return src, len(polys)


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
    spec = WindowSpec(pcfg.window, pcfg.overlap, pcfg.blend, pcfg.batch_size)
    expected = CRS.from_epsg(pcfg.expected_epsg) if pcfg.expected_epsg else None
    tags = {
        "model_data_digest": meta.data_digest,
        "window": pcfg.window,
        "overlap": pcfg.overlap,
        "blend": pcfg.blend,
    }

    sweeps = {s: ThresholdSweep() for s in SPLIT_NAMES}
    windows = nodata = 0
    for record in records:  # pass 1: probabilities
        info = predict_raster(
            record.image,
            paths.probability(record.patch_id),
            predictor,
            spec,
            expected_crs=expected,
            tags=tags,
        )
        windows += info.windows
        nodata += info.nodata_pixels
        prob, _, _ = read_raster(paths.probability(record.patch_id))
        sweeps[record.split].update(prob[0], read_truth(record, info.grid))
    threshold, rule = resolve_threshold(pcfg, meta, sweeps["val"])
    log.info("threshold %.3f (%s)", threshold, rule)

    pixel = {s: PixelCounts() for s in SPLIT_NAMES}
    objects = {s: ObjectCounts() for s in SPLIT_NAMES}
    farms, false_pos, missed = [], [], []
    for record in records:  # pass 2: masks, polygons, evaluation
        pid = record.patch_id
        threshold_raster(paths.probability(pid), paths.predicted_mask(pid), threshold)
        prob_arr, grid, _ = read_raster(paths.probability(pid))
        prob = prob_arr[0]
        truth = read_truth(record, grid)
        pred = np.nan_to_num(prob, nan=0.0) >= threshold
        pixel[record.split] = pixel[record.split].add(
            pixel_counts(pred, truth, valid=np.isfinite(prob))
        )
        polys, pred_labels = mask_to_polygons(
            pred, grid, patch_id=pid, prob=prob, min_area_m2=pcfg.min_polygon_area_m2
        )
        truth_labels, _ = components(truth)
        match = match_objects(pred_labels, truth_labels, pcfg.match_iou)
        objects[record.split].add(match)
        polys["split"] = record.split
        polys["matched"] = [k not in match.unmatched_pred for k in range(1, len(polys) + 1)]
        farms.append(polys)
        false_pos.append(polys.iloc[[k - 1 for k in match.unmatched_pred]])
        if match.unmatched_truth:
            keep = np.isin(truth_labels, match.unmatched_truth)
            lost = labels_to_polygons(
                np.where(keep, truth_labels, 0), grid, patch_id=pid, prob=prob, id_prefix="label_"
            )
            lost = lost[lost["pixels"] > 0].reset_index(drop=True)
            lost["split"] = record.split
            missed.append(lost)

    scenes = [
        predict_scene(Path(src), paths, predictor, spec, threshold, expected, tags, pcfg)
        for src in pcfg.rasters
    ]

    extra = extra_paths(paths)
    farms_4326 = _to_wgs84(farms).rename(columns={"id": "pred_id"})
    write_gpkg(farms_4326, paths.predicted_farms, "farms")
    write_gpkg(_to_wgs84(false_pos), extra["false_positives"], "false_positives")
    write_gpkg(_to_wgs84(missed), extra["missed"], "missed")
    pixel_out = {
        s: _round(pixel[s].as_dict())
        for s in SPLIT_NAMES
        if sweeps[s].pos.sum() + sweeps[s].neg.sum()
    }
    object_out = {s: _round(objects[s].as_dict()) for s in pixel_out}
    metrics = {
        "threshold": threshold,
        "threshold_rule": rule,
        "pixel": pixel_out,
        "object": object_out,
        "match_iou": pcfg.match_iou,
        "min_polygon_area_m2": pcfg.min_polygon_area_m2,
        "patches": len(records),
        "model_data_digest": meta.data_digest,
        "model_matches_tiles": meta.data_digest == tiles_digest,
    }
    write_json(paths.metrics, metrics)
    with atomic_path(extra["plot"]) as tmp:
        plot_evaluation({s: sweeps[s] for s in pixel_out}, threshold, pixel_out, tmp)
    summary = {
        "patches": len(records),
        "windows": windows,
        "nodata_pixels": nodata,
        "threshold": threshold,
        "threshold_rule": rule,
        "pixel_iou": {s: m["iou"] for s, m in pixel_out.items()},
        "object_precision": {s: m["precision"] for s, m in object_out.items()},
        "object_recall": {s: m["recall"] for s, m in object_out.items()},
        "polygons": len(farms_4326),
        "false_positives": sum(len(f) for f in false_pos),
        "missed": sum(len(m) for m in missed),
        "device": str(device),
        "batch_size_final": predictor.batch_size,
        "oom_halvings": predictor.halvings,
        "model_matches_tiles": metrics["model_matches_tiles"],
        "rasters": {s.name: n for s, n in scenes},
        "seconds": round(time.perf_counter() - start, 2),
    }
    outputs = [
        paths.predicted_farms,
        paths.metrics,
        *extra.values(),
        paths.stage_dir("predict") / "prob",
        paths.stage_dir("predict") / "mask",
        *([paths.stage_dir("predict") / "rasters"] if scenes else []),
    ]
    return StageOutput(outputs=outputs, summary=summary)
