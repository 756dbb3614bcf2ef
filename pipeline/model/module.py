"""The LightningModule: an smp U-Net, BCE + Dice loss, AdamW, torchmetrics per split.

Hyperparameters are primitives only (str, int, float, tuples, dicts of those), so Lightning
checkpoints load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
)

from pipeline.config import TrainConfig
from pipeline.errors import ModelError
from pipeline.model.io import Arch, build_unet

LossName = Literal["bce", "dice", "bce+dice"]
ScheduleName = Literal["cosine", "onecycle", "none"]

#: What checkpoint selection and early stopping watch: the validation loss. It is smooth from
#: the first step, while the pixel IoU at 0.5 can sit at 0 for several epochs while a model is
#: still learning (stopping would end it there) and, on a small validation split, jumps from
#: epoch to epoch (selecting on it picked an epoch-3 spike that missed its own training farms).
MONITOR = "val/loss"


def arch_from_config(cfg: TrainConfig, in_channels: int) -> Arch:
    """The exported architecture described by the ``train`` section."""
    return Arch(
        encoder=cfg.encoder,
        encoder_depth=cfg.encoder_depth,
        decoder_channels=tuple(cfg.decoder_channels),
        in_channels=in_channels,
        classes=1,
    )


def split_metrics(prefix: str) -> MetricCollection:
    """IoU, F1, precision and recall of the positive class at probability 0.5."""
    return MetricCollection(
        {
            "iou": BinaryJaccardIndex(),
            "f1": BinaryF1Score(),
            "precision": BinaryPrecision(),
            "recall": BinaryRecall(),
        },
        prefix=prefix,
    )


class SegLoss(nn.Module):
    """``bce_weight * BCE + dice_weight * Dice`` on logits ``(B, 1, H, W)`` vs 0/1 targets."""

    def __init__(self, kind: LossName, bce_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss

        self.bce_weight = bce_weight if kind in ("bce", "bce+dice") else 0.0
        self.dice_weight = dice_weight if kind in ("dice", "bce+dice") else 0.0
        self.bce = nn.BCEWithLogitsLoss()
        self.dice = DiceLoss(mode="binary", from_logits=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.bce_weight:
            loss = loss + self.bce_weight * self.bce(logits.float(), target)
        if self.dice_weight:
            loss = loss + self.dice_weight * self.dice(logits.float(), target)
        return loss


class SegmentationModule(L.LightningModule):
    """U-Net training logic.

    Args:
        arch: :class:`~pipeline.model.io.Arch` fields as a dict of primitives.
        loss: Loss kind.
        bce_weight: BCE weight in ``bce+dice``.
        dice_weight: Dice weight in ``bce+dice``.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        schedule: ``cosine`` (to zero over all steps), ``onecycle`` or ``none``.
        channels_last: Convert model and batches to channels-last on CUDA devices.
    """

    def __init__(
        self,
        arch: dict[str, Any],
        loss: LossName = "bce+dice",
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        schedule: ScheduleName = "cosine",
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        arch = dict(arch)
        arch["decoder_channels"] = tuple(arch["decoder_channels"])
        self.save_hyperparameters(
            {
                "arch": {**arch, "decoder_channels": list(arch["decoder_channels"])},
                "loss": loss,
                "bce_weight": bce_weight,
                "dice_weight": dice_weight,
                "lr": lr,
                "weight_decay": weight_decay,
                "schedule": schedule,
                "channels_last": channels_last,
            }
        )
        self.arch = Arch(**arch)
        self.net = build_unet(self.arch)
        self.criterion = SegLoss(loss, bce_weight, dice_weight)
        # keys are prefixed: "train" would clash with nn.Module.train
        self.metrics = nn.ModuleDict(
            {f"m_{s}": split_metrics(f"{s}/") for s in ("train", "val", "test")}
        )

    @classmethod
    def from_config(cls, cfg: TrainConfig, in_channels: int) -> SegmentationModule:
        """Build from the ``train`` section."""
        return cls(
            asdict(arch_from_config(cfg, in_channels)),
            loss=cfg.loss,
            bce_weight=cfg.bce_weight,
            dice_weight=cfg.dice_weight,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            schedule=cfg.schedule,
            channels_last=cfg.channels_last,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized ``(B, C, H, W)`` -> logits ``(B, 1, H, W)``."""
        return self.net(x)

    def _use_channels_last(self) -> bool:
        return bool(self.hparams["channels_last"]) and self.device.type == "cuda"

    def on_fit_start(self) -> None:
        if self._use_channels_last():
            self.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self._use_channels_last():
            x, y = batch
            return x.contiguous(memory_format=torch.channels_last), y
        return batch

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        metrics: MetricCollection = self.metrics[f"m_{split}"]  # type: ignore[assignment]
        metrics.update(torch.sigmoid(logits.detach().float()), y.int())
        self.log(
            f"{split}/loss",
            loss,
            prog_bar=split != "test",
            on_step=split == "train",
            on_epoch=True,
            batch_size=x.shape[0],
            sync_dist=split != "train",
        )
        self.log_dict(
            metrics, on_step=False, on_epoch=True, batch_size=x.shape[0], prog_bar=split == "val"
        )
        return loss

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"]
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler: torch.optim.lr_scheduler.LRScheduler
        if hp["schedule"] == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        elif hp["schedule"] == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=hp["lr"], total_steps=total
            )
        else:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def load_encoder_weights(
    net: nn.Module, path: Path, file_bands: Sequence[str], bands: Sequence[str]
) -> dict[str, int]:
    """Load a local encoder state dict into ``net.encoder``, remapping input bands.

    Input convolutions (4-D weights whose second axis has ``len(file_bands)`` channels in the
    file and ``len(bands)`` in the network) are rebuilt band by band: a band of ``bands``
    present in ``file_bands`` takes that filter slice; a band the file lacks takes the mean of
    the file's slices. The file is read with ``weights_only=True``.

    Returns:
        ``{"loaded": tensors copied, "remapped": input convolutions remapped,
        "missing_bands": bands filled with the mean}``.

    Raises:
        ModelError: the file is unreadable or its tensors do not fit the encoder.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelError(
            f"cannot read encoder weights {path} ({err}); give a state dict "
            "saved with torch.save, or unset train.encoder_weights"
        ) from err
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    encoder = getattr(net, "encoder", net)
    own = encoder.state_dict()
    missing = [b for b in bands if b not in file_bands]
    remapped = 0
    new_state = {}
    for name, tensor in state.items():
        name = name.removeprefix("encoder.")
        if name not in own:
            continue
        target = own[name]
        if tensor.ndim == 4 and tensor.shape[1] == len(file_bands) != target.shape[1]:
            slices = [
                tensor[:, list(file_bands).index(b)] if b in file_bands else tensor.mean(1)
                for b in bands
            ]
            tensor = torch.stack(slices, 1)
            remapped += 1
        if tensor.shape != target.shape:
            raise ModelError(
                f"encoder weights {path}: {name} has shape {tuple(tensor.shape)} "
                f"but the encoder needs {tuple(target.shape)}; check "
                "train.encoder and train.encoder_weights_bands"
            )
        new_state[name] = tensor
    if not new_state:
        raise ModelError(
            f"encoder weights {path} share no tensor names with encoder "
            f"{type(encoder).__name__}; check train.encoder"
        )
    encoder.load_state_dict(new_state, strict=False)
    return {"loaded": len(new_state), "remapped": remapped, "missing_bands": len(missing)}
