"""Trainer setup and the fit: precision, checkpoints, early stopping, logs, resume.

``fit_model`` trains a :class:`~pipeline.model.module.SegmentationModule` on a
:class:`~pipeline.model.data.TilesDataModule` and returns the module holding the best
weights (by validation IoU). Checkpoints go to ``<checkpoints>/``: ``best-eNNN.ckpt`` and
``last.ckpt``; beside that folder, ``fit_key.json`` holds a digest of the train config, the
data and the seed. A re-run with the same key resumes from ``last.ckpt``; another key starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from pipeline.config import TrainConfig
from pipeline.errors import ModelError
from pipeline.io import write_json
from pipeline.model.data import TilesDataModule
from pipeline.model.evaluate import PixelCounts, ThresholdSweep, pixel_counts
from pipeline.model.module import MONITOR, SegmentationModule

log = logging.getLogger(__name__)


def _quiet_lightning() -> None:
    """Route Lightning's messages through the pipeline's log format once, without its ads."""
    if not logging.getLogger().hasHandlers():
        return
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage()
    )


_quiet_lightning()

KEY_FILE = "fit_key.json"
LAST = "last.ckpt"


def uses_gpu(cfg: TrainConfig) -> bool:
    """True when Lightning will train on CUDA devices."""
    return cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(cfg: TrainConfig) -> str:
    """``auto`` -> ``bf16-mixed`` on a bf16-capable GPU (else ``16-mixed``), ``32-true`` on CPU."""
    if cfg.precision != "auto":
        return cfg.precision
    if uses_gpu(cfg):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def resolve_strategy(cfg: TrainConfig) -> str:
    """``ddp`` for more than one device, else ``auto``."""
    devices = cfg.devices
    many = (
        (isinstance(devices, int) and devices > 1)
        or (isinstance(devices, str) and (devices == "-1" or "," in devices.strip(",")))
        or (devices == "auto" and uses_gpu(cfg) and torch.cuda.device_count() > 1)
    )
    return "ddp" if many else "auto"


def fit_key(cfg: TrainConfig, data_digest: str, seed: int) -> str:
    """Digest of what a checkpoint depends on: train config, training data, seed."""
    blob = json.dumps(
        {"train": cfg.model_dump(mode="json"), "data": data_digest, "seed": seed}, sort_keys=True
    ).encode()
    return hashlib.sha256(blob).hexdigest()


def prepare_checkpoints(ckpt_dir: Path, key: str) -> Path | None:
    """Return ``last.ckpt`` to resume from, or clear stale checkpoints and return ``None``.

    Resumes only when ``fit_key.json`` matches ``key`` and the earlier fit did not complete.
    """
    key_file, last = ckpt_dir.with_name(KEY_FILE), ckpt_dir / LAST
    old = json.loads(key_file.read_text()) if key_file.is_file() else {}
    if old.get("key") == key and not old.get("complete") and last.is_file():
        log.info("resuming from %s", last)
        return last
    if ckpt_dir.exists():
        reason = "the earlier fit completed" if old.get("key") == key else "config/data changed"
        log.info("starting a fresh fit (%s); clearing %s", reason, ckpt_dir)
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_json(key_file, {"key": key, "complete": False})
    return None


def mark_complete(ckpt_dir: Path, key: str) -> None:
    """Record that the fit with ``key`` finished and its model was exported."""
    write_json(ckpt_dir.with_name(KEY_FILE), {"key": key, "complete": True})


class EpochLog(Callback):
    """One log line per validation epoch (the progress bar is off in batch runs)."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        log.info(
            "epoch %d step %d: %s",
            trainer.current_epoch,
            trainer.global_step,
            " ".join(f"{k}={v:.4f}" for k, v in sorted(m.items())),
        )


def build_trainer(
    cfg: TrainConfig,
    out_dir: Path,
    ckpt_dir: Path,
    logs_dir: Path,
    extra_callbacks: Sequence[Callback] = (),
) -> L.Trainer:
    """A Lightning Trainer: accelerator/devices/precision from ``cfg``, checkpoints, logs.

    Args:
        cfg: The ``train`` section.
        out_dir: Lightning's root folder.
        ckpt_dir: Checkpoints (``best-e<epoch>.ckpt``, ``last.ckpt``).
        logs_dir: CSV (``csv/``) and TensorBoard (``tensorboard/``) logs.
        extra_callbacks: More Lightning callbacks (tests, benchmarks).
    """
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best-e{epoch:03d}",
        monitor=MONITOR,
        mode="min",
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
    )
    # select and stop on the validation loss (see MONITOR)
    stopping = EarlyStopping(monitor=MONITOR, mode="min", patience=cfg.early_stopping_patience)
    loggers = [
        CSVLogger(logs_dir, name="csv", version=0),
        TensorBoardLogger(logs_dir, name="tensorboard", version=0),
    ]
    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=resolve_strategy(cfg),
        precision=resolve_precision(cfg),  # type: ignore[arg-type]
        max_epochs=cfg.epochs,
        callbacks=[checkpoint, stopping, EpochLog(), *extra_callbacks],
        logger=loggers,
        log_every_n_steps=cfg.log_every_n_steps,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        benchmark=uses_gpu(cfg),
        default_root_dir=out_dir,
    )


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit_model`.

    Attributes:
        module: The module holding the best weights, on CPU, in eval mode.
        best_path: Best checkpoint (``None`` when validation never ran).
        epochs: Epochs completed (including those of an interrupted run resumed).
        global_step: Optimizer steps completed.
        best_val_loss: Lowest validation loss (the selected checkpoint's).
        resumed_from_step: Step the fit resumed from (0 for a fresh fit).
        seconds: Wall time of ``trainer.fit``.
        device: ``cpu`` or the CUDA device name.
        precision: Lightning precision used.
        is_global_zero: False on DDP worker ranks (which must not export).
    """

    module: SegmentationModule
    best_path: Path | None
    epochs: int
    global_step: int
    best_val_loss: float
    resumed_from_step: int
    seconds: float
    device: str
    precision: str
    is_global_zero: bool


def load_checkpoint_weights(module: SegmentationModule, ckpt: Path) -> None:
    """Load a Lightning checkpoint's ``state_dict`` with ``weights_only=True``."""
    blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    module.load_state_dict(blob["state_dict"])


def fit_model(
    cfg: TrainConfig,
    datamodule: TilesDataModule,
    module: SegmentationModule,
    *,
    out_dir: Path,
    ckpt_dir: Path,
    logs_dir: Path,
    key: str,
    seed: int,
    extra_callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Seed, build the trainer, fit (resuming when possible), and reload the best weights.

    Raises:
        ModelError: the train or val split is empty.
    """
    for split in ("train", "val"):
        if not datamodule.records[split]:
            raise ModelError(
                f"the tiles index has no {split!r} tiles, so the model cannot be "
                f"{'trained' if split == 'train' else 'validated'}; change tiles.split_fractions "
                "or tiles.block_size_m (smaller blocks), or plan more patches, then re-run"
            )
    L.seed_everything(seed, workers=True)
    resume = prepare_checkpoints(ckpt_dir, key)
    resumed_step = 0
    if resume is not None:
        resumed_step = int(torch.load(resume, map_location="cpu", weights_only=True)["global_step"])
    trainer = build_trainer(cfg, out_dir, ckpt_dir, logs_dir, extra_callbacks)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    seconds = time.perf_counter() - start
    callback = trainer.checkpoint_callback
    assert isinstance(callback, ModelCheckpoint)  # build_trainer installs one
    best = Path(callback.best_model_path) if callback and callback.best_model_path else None
    if best is not None and best.is_file():
        load_checkpoint_weights(module, best)
    score = callback.best_model_score if callback else None
    device = torch.cuda.get_device_name() if uses_gpu(cfg) else "cpu"
    return FitResult(
        module=module.cpu().eval(),
        best_path=best,
        epochs=trainer.current_epoch,
        global_step=trainer.global_step,
        best_val_loss=float(score) if score is not None else float("nan"),
        resumed_from_step=resumed_step,
        seconds=seconds,
        device=device,
        precision=str(trainer.precision),
        is_global_zero=trainer.is_global_zero,
    )


def loader_probabilities(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> Any:
    """Yield ``(prob (B, H, W) float32, truth (B, H, W) bool)`` numpy pairs for a loader."""
    model = model.to(device).eval()
    cuda = device.type == "cuda"
    for x, y in loader:
        x = x.to(device)
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=cuda):
            prob = torch.sigmoid(model(x).float())[:, 0].cpu().numpy()
        yield prob, y[:, 0].numpy() > 0.5


def sweep_loader(
    model: torch.nn.Module, loader: DataLoader, device: torch.device
) -> ThresholdSweep:
    """Probability histograms of one split (for the validation-optimal threshold)."""
    sweep = ThresholdSweep()
    for prob, truth in loader_probabilities(model, loader, device):
        sweep.update(prob, truth)
    return sweep


def counts_loader(
    model: torch.nn.Module, loader: DataLoader, device: torch.device, threshold: float
) -> PixelCounts:
    """Pixel confusion counts of one split at ``threshold``."""
    total = PixelCounts()
    for prob, truth in loader_probabilities(model, loader, device):
        total = total.add(pixel_counts(prob >= threshold, truth))
    return total


def choose_threshold(
    cfg_threshold: float | str,
    model: torch.nn.Module,
    val_loader: DataLoader,
    device: torch.device,
) -> tuple[float, float]:
    """``(threshold, val IoU at it)``: the configured number, or the validation-optimal one."""
    sweep = sweep_loader(model, val_loader, device)
    if cfg_threshold == "auto":
        return sweep.best("iou")
    threshold = float(cfg_threshold)
    k = int(np.clip(round(threshold * sweep.bins) - 1, 0, sweep.bins - 2))
    return threshold, float(sweep.curves()["iou"][k])
