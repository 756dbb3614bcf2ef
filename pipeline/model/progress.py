"""Training progress in the log: ``train: epoch 7/24 (29 %), 1 min 40 s elapsed, about 4 min
left; val/iou=0.61 val/loss=0.32`` once per validation epoch (on rank 0).

Add :class:`EpochProgress` to the Trainer's callbacks (``fit_model(..., extra_callbacks=...)``).
"""

from __future__ import annotations

import logging
import time

import lightning as L
from lightning.pytorch.callbacks import Callback

from pipeline.progress import duration

log = logging.getLogger("pipeline.progress")


def epoch_line(epoch: int, epochs: int, elapsed: float, done_here: int, metrics: dict) -> str:
    """The log line after ``epoch`` (1-based) of ``epochs``; ``done_here`` epochs ran in
    ``elapsed`` seconds in this process (fewer than ``epoch`` after a resume)."""
    left = elapsed / done_here * (epochs - epoch) if done_here > 0 else None
    tail = f", about {duration(left)} left" if left is not None and epoch < epochs else ""
    scores = " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
    return (
        f"train: epoch {epoch}/{epochs} ({100 * epoch // max(epochs, 1)} %), "
        f"{duration(elapsed)} elapsed{tail}" + (f"; {scores}" if scores else "")
    )


class EpochProgress(Callback):
    """Logs :func:`epoch_line` at the end of each validation epoch (not the sanity check)."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.first_epoch = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.first_epoch = time.monotonic(), trainer.current_epoch

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch + 1
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        elapsed = time.monotonic() - self.start
        log.info(
            epoch_line(
                epoch, trainer.max_epochs or epoch, elapsed, epoch - self.first_epoch, metrics
            )
        )
