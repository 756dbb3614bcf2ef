"""train stage: tiles index + band statistics -> a Lightning U-Net -> ``train/model.pt``.

Re-running after an interruption resumes from ``train/checkpoints/last.ckpt`` (same config,
data and seed). Under DDP every rank runs this function (Lightning re-runs the command for a
machine's other processes, or torchrun/srun start them): rank 0 alone prepares the checkpoints
(:func:`~pipeline.model.fit.fit_model`); worker ranks exit after the fit, before the runner
writes a manifest, and rank 0 exports the model and writes the manifest.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np

from pipeline.bands import BANDS
from pipeline.config import RunConfig
from pipeline.config.feedback import IgnoreLabelsConfig
from pipeline.manifest import manifest_digest
from pipeline.model.data import (
    SPLIT_NAMES,
    TileRecord,
    TilesDataModule,
    read_band_stats,
    read_tiles_index,
)
from pipeline.model.fit import (
    choose_threshold,
    counts_loader,
    fit_key,
    fit_model,
    mark_complete,
)
from pipeline.model.ignore import ignore_masks, ignore_summary
from pipeline.model.io import ModelMeta, save_model
from pipeline.model.module import SegmentationModule, load_encoder_weights
from pipeline.model.window import resolve_device
from pipeline.paths import RunPaths
from pipeline.stages.base import StageOutput
from pipeline.triage.feedback import ignore_regions, read_review

log = logging.getLogger(__name__)


def ignored_pixels(
    cfg: IgnoreLabelsConfig | None, records: list[TileRecord]
) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """Per patch id, the pixels ``train.ignore_labels`` leaves out, and their summary."""
    if cfg is None:
        return {}, None
    review = read_review(cfg.review, "train.ignore_labels.review")
    regions = ignore_regions(review, cfg)
    masks = ignore_masks(records, regions)
    info = ignore_summary(cfg, review.sha256, regions, masks, records)
    log.info("ignore mask: %s", info)
    return masks, info


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Train, pick the threshold, evaluate every split, export ``paths.model``."""
    tcfg, seed = cfg.train, cfg.run.seed
    records = read_tiles_index(paths.tiles_index, paths.root)
    stats = read_band_stats(paths.band_stats)
    data_digest = manifest_digest(paths.manifest("tiles"))
    ignore, ignore_info = ignored_pixels(tcfg.ignore_labels, records)
    datamodule = TilesDataModule(records, stats, tcfg, seed, ignore)
    module = SegmentationModule.from_config(tcfg, in_channels=len(BANDS), seed=seed)
    weights_info = None
    if tcfg.encoder_weights is not None and tcfg.encoder_weights_bands is not None:
        weights_info = load_encoder_weights(
            module.net, tcfg.encoder_weights, tcfg.encoder_weights_bands, BANDS
        )
    key = fit_key(tcfg, data_digest, seed)
    result = fit_model(
        tcfg,
        datamodule,
        module,
        out_dir=paths.stage_dir("train"),
        ckpt_dir=paths.checkpoints,
        logs_dir=paths.train_logs,
        key=key,
        seed=seed,
    )
    if not result.is_global_zero:
        sys.exit(0)  # DDP worker rank: rank 0 exports and writes the manifest

    device = resolve_device("auto" if tcfg.accelerator in ("auto", "gpu", "cuda") else "cpu")
    net = result.module.net
    threshold, val_iou_at_threshold = choose_threshold(
        tcfg.threshold, net, datamodule.val_dataloader(), device
    )
    metrics = {}
    for split in SPLIT_NAMES:
        if datamodule.records[split]:
            counts = counts_loader(net, datamodule.eval_dataloader(split), device, threshold)
            metrics[split] = {
                k: round(v, 5) if isinstance(v, float) else v for k, v in counts.as_dict().items()
            }
    meta = ModelMeta(
        bands=BANDS,
        mean=stats.mean,
        std=stats.std,
        arch=module.arch,
        threshold=threshold,
        data_digest=data_digest,
        extra={
            "epochs": result.epochs,
            "global_step": result.global_step,
            "best_val_loss": result.best_val_loss,
            "val_iou": val_iou_at_threshold,
            "seed": seed,
            "threshold_rule": "val-optimal IoU" if tcfg.threshold == "auto" else "config",
            "precision": result.precision,
            "device": result.device,
            "processes": result.world_size,
        },
    )
    save_model(paths.model, net.cpu(), meta)
    mark_complete(paths.checkpoints, key)
    log.info(
        "exported %s (threshold %.3f, val IoU %.3f)",
        paths.model,
        threshold,
        metrics.get("val", {}).get("iou", float("nan")),
    )
    summary = {
        "epochs": result.epochs,
        "steps": result.global_step,
        "resumed_from_step": result.resumed_from_step,
        "best_val_loss": round(result.best_val_loss, 5),
        "threshold": threshold,
        "metrics": metrics,
        "tiles": {s: len(datamodule.records[s]) for s in SPLIT_NAMES},
        "fit_seconds": round(result.seconds, 2),
        "device": result.device,
        "precision": result.precision,
        "processes": result.world_size,
        "threads": result.threads,
        "deterministic": tcfg.deterministic,
        "encoder": tcfg.encoder,
        "seed": seed,
        "best_checkpoint": paths.relative(result.best_path) if result.best_path else None,
        "encoder_weights": weights_info,
        **({"ignore_labels": ignore_info} if ignore_info else {}),
    }
    return StageOutput(outputs=[paths.model, paths.checkpoints, paths.train_logs], summary=summary)
