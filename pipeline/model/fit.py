"""Trainer setup and the fit: devices, precision, checkpoints, early stopping, logs, resume.

``fit_model`` trains a :class:`~pipeline.model.module.SegmentationModule` on a
:class:`~pipeline.model.data.TilesDataModule` and returns the module holding the best
weights (by validation loss). Checkpoints go to ``<checkpoints>/``: ``best-eNNN.ckpt`` and
``last.ckpt``; beside that folder, ``fit_key.json`` holds a digest of the train config, the
data and the seed. A re-run with the same key resumes from ``last.ckpt``; another key starts afresh.

Several processes (DDP, see :class:`~pipeline.config.TrainConfig`): every rank reads the resume
point before the processes connect; once they have, rank 0 alone clears or keeps the
checkpoints and writes ``fit_key.json`` while the others wait (:class:`PrepareCheckpoints`).
Reproducibility: a fixed thread count, Lightning's deterministic mode, and every random draw
seeded from the run seed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from torch.utils.data import DataLoader

from pipeline.config import TrainConfig
from pipeline.errors import ConfigError, ModelError
from pipeline.io import write_json
from pipeline.model.data import TilesDataModule, device_batch_size
from pipeline.model.evaluate import PixelCounts, ThresholdSweep, pixel_counts
from pipeline.model.module import MONITOR, GlobalBatchNormSync, SegmentationModule
from pipeline.model.progress import EpochProgress

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


def devices_per_node(cfg: TrainConfig) -> int:
    """Processes per machine that ``train.devices`` asks for (Lightning's reading of it)."""
    devices = cfg.devices
    text = str(devices).strip()
    if text == "auto":
        return torch.cuda.device_count() if uses_gpu(cfg) else 1
    if text == "-1":
        return torch.cuda.device_count()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    return int(text)


def resolve_strategy(cfg: TrainConfig) -> str:
    """``ddp`` when devices x nodes > 1, else ``auto``."""
    return "ddp" if devices_per_node(cfg) * cfg.num_nodes > 1 else "auto"


def resolve_threads(cfg: TrainConfig, processes_per_node: int) -> int:
    """``train.threads``, or ``min(4, CPU cores available / processes on this machine)``."""
    if cfg.threads is not None:
        return cfg.threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, (cores or 1) // max(1, processes_per_node)))


#: Inter-op threads: nothing in training runs operators in parallel with each other.
INTEROP_THREADS = 1


def fix_threads(threads: int) -> None:
    """Set torch's intra-op threads (and inter-op threads, when torch still allows it)."""
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != INTEROP_THREADS:
        try:
            torch.set_num_interop_threads(INTEROP_THREADS)
        except RuntimeError:  # only possible before the first parallel work in the process
            log.info(
                "inter-op threads stay at %d (fixed earlier in this process)",
                torch.get_num_interop_threads(),
            )


@contextmanager
def restored_torch_flags() -> Iterator[None]:
    """Restore the process-wide flags a Trainer sets (deterministic algorithms, cuDNN).

    Later work in the same process (the post-fit evaluation, the stages after train in
    ``python -m pipeline all``) runs as it would have without the fit.
    """
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:]


def fit_key(cfg: TrainConfig, data_digest: str, seed: int) -> str:
    """Digest of what a checkpoint depends on: train config, training data, seed."""
    blob = json.dumps(
        {"train": cfg.digest_values(), "data": data_digest, "seed": seed}, sort_keys=True
    ).encode()
    return hashlib.sha256(blob).hexdigest()


def resume_point(ckpt_dir: Path, key: str) -> Path | None:
    """``last.ckpt`` to resume from, or ``None`` for a fresh fit; reads only.

    Resumes only when ``fit_key.json`` matches ``key`` and the earlier fit did not complete.
    """
    key_file, last = ckpt_dir.with_name(KEY_FILE), ckpt_dir / LAST
    old = json.loads(key_file.read_text()) if key_file.is_file() else {}
    if old.get("key") == key and not old.get("complete") and last.is_file():
        return last
    return None


def prepare_checkpoints(ckpt_dir: Path, key: str, resume: Path | None) -> None:
    """Keep the checkpoints for ``resume``, or clear them and record ``key`` as begun."""
    if resume is not None:
        log.info("resuming from %s", resume)
        return
    key_file = ckpt_dir.with_name(KEY_FILE)
    if ckpt_dir.exists():
        old = json.loads(key_file.read_text()) if key_file.is_file() else {}
        reason = "the earlier fit completed" if old.get("key") == key else "config/data changed"
        log.info("starting a fresh fit (%s); clearing %s", reason, ckpt_dir)
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_json(key_file, {"key": key, "complete": False})


class PrepareCheckpoints(Callback):
    """Rank 0 prepares the checkpoints folder once every process has connected.

    Each process decided ``resume`` (:func:`resume_point`) before connecting, so none reads
    the folder while rank 0 changes it; Lightning's barrier after ``setup`` holds the others
    until rank 0 is done, before any checkpoint is loaded or written.

    Raises:
        ModelError: a rank decided differently from rank 0 (the folder is not shared).
    """

    def __init__(self, ckpt_dir: Path, key: str, resume: Path | None) -> None:
        self.ckpt_dir, self.key, self.resume = ckpt_dir, key, resume

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        mine = str(self.resume) if self.resume else ""
        rank0 = trainer.strategy.broadcast(mine, src=0)
        if rank0 != mine:
            raise ModelError(
                f"rank {trainer.global_rank} would resume from {mine or 'nothing'} but rank 0 "
                f"from {rank0 or 'nothing'}: every node must see the same {self.ckpt_dir}; "
                "put run.data_root on a filesystem all nodes share"
            )
        if trainer.is_global_zero:
            prepare_checkpoints(self.ckpt_dir, self.key, self.resume)


def runs_train_command() -> bool:
    """True when this process runs ``python -m pipeline train`` (or ``solarfarm train``)."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    entry = spec.name if spec is not None else Path(sys.argv[0]).name
    return entry in ("pipeline.__main__", "solarfarm") and sys.argv[1:2] == ["train"]


def check_launch(trainer: L.Trainer) -> None:
    """Refuse to let Lightning start DDP processes by re-running a command that is not train.

    Lightning starts a machine's other processes by re-running this process's command; for
    ``python -m pipeline all``, a notebook or a test session that would re-run everything.

    Raises:
        ConfigError: several processes, none started externally, and the command is not train.
    """
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if trainer.world_size == 1 or environment is None:
        return
    if environment.creates_processes_externally or runs_train_command():
        return
    raise ConfigError(
        f"train.devices x train.num_nodes asks for {trainer.world_size} processes; Lightning "
        "starts them by re-running this command, which only works for `python -m pipeline "
        f"train` (this process runs {' '.join(sys.argv)!r}). Run `make train` / `python -m "
        "pipeline train --config ...`, start the processes with torchrun or srun, or set "
        "train.devices=1"
    )


def mark_complete(ckpt_dir: Path, key: str) -> None:
    """Record that the fit with ``key`` finished and its model was exported."""
    write_json(ckpt_dir.with_name(KEY_FILE), {"key": key, "complete": True})


def loggers_for(logs_dir: Path) -> list[Logger]:
    """CSV logs always; TensorBoard logs when the ``tensorboard`` extra is installed."""
    loggers: list[Logger] = [CSVLogger(logs_dir, name="csv", version=0)]
    if importlib.util.find_spec("tensorboard") is None:
        log.info("TensorBoard logs skipped: install the extra (pip install '.[tensorboard]')")
    else:
        loggers.append(TensorBoardLogger(logs_dir, name="tensorboard", version=0))
    return loggers


def build_trainer(
    cfg: TrainConfig,
    out_dir: Path,
    ckpt_dir: Path,
    logs_dir: Path,
    extra_callbacks: Sequence[Callback] = (),
) -> L.Trainer:
    """A Lightning Trainer: devices, precision, determinism from ``cfg``; checkpoints, logs.

    Under DDP batch normalization is synchronized (torch's ``SyncBatchNorm`` on GPU,
    :class:`~pipeline.model.module.GlobalBatchNorm` elsewhere) and the training sampler
    shards the data itself (Lightning's distributed sampler is off).

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
    loggers = loggers_for(logs_dir)
    strategy = resolve_strategy(cfg)
    gpu = uses_gpu(cfg)
    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=strategy,
        sync_batchnorm=strategy == "ddp" and gpu,
        plugins=[GlobalBatchNormSync()] if strategy == "ddp" and not gpu else None,
        use_distributed_sampler=False,
        deterministic=cfg.deterministic,
        precision=resolve_precision(cfg),  # type: ignore[arg-type]
        max_epochs=cfg.epochs,
        callbacks=[checkpoint, stopping, EpochProgress(), *extra_callbacks],
        logger=loggers,
        log_every_n_steps=cfg.log_every_n_steps,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        benchmark=gpu and not cfg.deterministic,
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
        world_size: Processes that trained (devices x nodes).
        threads: torch intra-op threads per process.
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
    world_size: int
    threads: int


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
    """Fix threads and seeds, build the trainer, fit (resuming when possible), reload the best.

    Every DDP rank calls this; only rank 0 reloads the best weights.

    Raises:
        ModelError: the train or val split is empty.
        ConfigError: ``batch_size`` does not split over the processes, or Lightning would have
            to re-run a command other than train to start them.
    """
    for split in ("train", "val"):
        if not datamodule.records[split]:
            raise ModelError(
                f"the tiles index has no {split!r} tiles, so the model cannot be "
                f"{'trained' if split == 'train' else 'validated'}; change tiles.split_fractions "
                "or tiles.block_size_m (smaller blocks), or plan more patches, then re-run"
            )
    resume = resume_point(ckpt_dir, key)
    resumed_step = 0
    if resume is not None:
        resumed_step = int(torch.load(resume, map_location="cpu", weights_only=True)["global_step"])
    prepare = PrepareCheckpoints(ckpt_dir, key, resume)
    with restored_torch_flags():
        trainer = build_trainer(cfg, out_dir, ckpt_dir, logs_dir, [prepare, *extra_callbacks])
        device_batch_size(cfg.batch_size, trainer.world_size)
        check_launch(trainer)
        threads = resolve_threads(cfg, trainer.num_devices)
        fix_threads(threads)
        L.seed_everything(seed, workers=True)
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        seconds = time.perf_counter() - start
    callback = trainer.checkpoint_callback
    assert isinstance(callback, ModelCheckpoint)  # build_trainer installs one
    best = Path(callback.best_model_path) if callback and callback.best_model_path else None
    if trainer.is_global_zero and best is not None and best.is_file():
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
        world_size=trainer.world_size,
        threads=threads,
    )


def loader_probabilities(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> Any:
    """Yield ``(prob, truth, valid)`` numpy arrays ``(B, H, W)`` for a loader: float32
    probabilities, bool labels, bool labelled pixels (False where ignored)."""
    model = model.to(device).eval()
    cuda = device.type == "cuda"
    for x, y in loader:
        x = x.to(device)
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=cuda):
            prob = torch.sigmoid(model(x).float())[:, 0].cpu().numpy()
        target = y[:, 0].numpy()
        yield prob, target > 0.5, target >= 0


def sweep_loader(
    model: torch.nn.Module, loader: DataLoader, device: torch.device
) -> ThresholdSweep:
    """Probability histograms of one split (for the validation-optimal threshold)."""
    sweep = ThresholdSweep()
    for prob, truth, valid in loader_probabilities(model, loader, device):
        sweep.update(prob, truth, valid)
    return sweep


def counts_loader(
    model: torch.nn.Module, loader: DataLoader, device: torch.device, threshold: float
) -> PixelCounts:
    """Pixel confusion counts of one split at ``threshold`` (ignored pixels left out)."""
    total = PixelCounts()
    for prob, truth, valid in loader_probabilities(model, loader, device):
        total = total.add(pixel_counts(prob >= threshold, truth, valid))
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
