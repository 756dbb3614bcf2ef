"""The LightningModule: an smp U-Net, BCE + Dice loss, AdamW, torchmetrics per split.

Hyperparameters are primitives only (str, int, float, tuples, dicts of those), so Lightning
checkpoints load with ``torch.load(..., weights_only=True)``.

Under DDP the module trains as one process would on the global batch: batch normalization
statistics (:class:`GlobalBatchNorm`, or torch's ``SyncBatchNorm`` on GPU) and the Dice sums
are reduced over every process, and parameters the network never uses (encoder stages beyond
``encoder_depth``) are frozen, so DDP does not wait for their gradients.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.plugins import LayerSync
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
from pipeline.model.ignore import IGNORE_VALUE, valid_pixels
from pipeline.model.io import Arch, build_unet

log = logging.getLogger(__name__)

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
    """IoU, F1, precision and recall of the positive class at probability 0.5 (ignored pixels,
    :data:`~pipeline.model.ignore.IGNORE_VALUE`, left out)."""
    ignore = int(IGNORE_VALUE)
    return MetricCollection(
        {
            "iou": BinaryJaccardIndex(ignore_index=ignore),
            "f1": BinaryF1Score(ignore_index=ignore),
            "precision": BinaryPrecision(ignore_index=ignore),
            "recall": BinaryRecall(ignore_index=ignore),
        },
        prefix=prefix,
    )


def distributed_world() -> int:
    """Processes in the default process group (1 when none is initialized)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def sum_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the default process group, differentiably.

    Every process computes a loss from the same sum; its gradient is each process's loss
    gradient summed, and DDP's averaging then yields the gradient one process would get.
    """
    return _SumOverProcesses.apply(tensor)  # type: ignore[no-any-return]


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    global_batch: bool,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft Dice loss ``1 - 2 sum(p t) / (sum(p) + sum(t))`` over the whole batch.

    Sums run over every pixel of the batch, as in smp's binary ``DiceLoss``; with
    ``global_batch`` they are summed over all processes first (differentiably), so DDP
    processes optimize the Dice of the global batch. A batch without farm pixels scores 0.

    Args:
        logits: ``(B, 1, H, W)`` float32 logits.
        target: ``(B, 1, H, W)`` 0/1 floats.
        global_batch: Reduce the sums over the default process group.
        valid: ``(B, 1, H, W)`` 0/1 floats: pixels that count (``None``: all).
    """
    prob = F.logsigmoid(logits).exp()
    if valid is not None:
        prob, target = prob * valid, target * valid
    sums = torch.stack([(prob * target).sum(), prob.sum(), target.sum()])
    if global_batch:
        sums = sum_over_processes(sums)
    intersection, predicted, truth = sums
    score = intersection / (0.5 * (predicted + truth)).clamp_min(1e-7)
    return (1.0 - score) * (truth > 0).to(score.dtype)


class SegLoss(nn.Module):
    """``bce_weight * BCE + dice_weight * Dice`` on logits ``(B, 1, H, W)`` vs 0/1 targets.

    With ``global_batch`` (DDP training) the Dice sums span every process's batch; the BCE
    pixel mean needs nothing (DDP averages equal-sized per-process means).
    """

    def __init__(self, kind: LossName, bce_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.bce_weight = bce_weight if kind in ("bce", "bce+dice") else 0.0
        self.dice_weight = dice_weight if kind in ("dice", "bce+dice") else 0.0
        self.bce = nn.BCEWithLogitsLoss()

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, *, global_batch: bool = False
    ) -> torch.Tensor:
        """The loss; pixels whose target is :data:`~pipeline.model.ignore.IGNORE_VALUE` (any
        negative value) count in neither term, so their gradient is zero. BCE is then the mean
        over the other pixels (0 when every pixel is ignored)."""
        if bool((target < 0).any()):
            return self._masked(logits.float(), target.float(), global_batch)
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.bce_weight:
            loss = loss + self.bce_weight * self.bce(logits.float(), target)
        if self.dice_weight:
            dice = dice_loss(logits.float(), target.float(), global_batch=global_batch)
            loss = loss + self.dice_weight * dice
        return loss

    def _masked(
        self, logits: torch.Tensor, target: torch.Tensor, global_batch: bool
    ) -> torch.Tensor:
        valid = valid_pixels(target).to(logits.dtype)
        labels = target.clamp_min(0.0)
        loss = logits.new_zeros(())
        if self.bce_weight:
            pixels = F.binary_cross_entropy_with_logits(
                logits, labels, weight=valid, reduction="sum"
            )
            loss = loss + self.bce_weight * pixels / valid.sum().clamp_min(1.0)
        if self.dice_weight:
            dice = dice_loss(logits, labels, global_batch=global_batch, valid=valid)
            loss = loss + self.dice_weight * dice
        return loss


class GlobalBatchNorm(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics span every DDP process (any device, ``gloo``).

    torch's ``SyncBatchNorm`` runs on GPUs only. This one reduces per-channel sums, counts and
    then squared deviations with differentiable all-reduces (two passes, in float64), so
    gradients flow through the global statistics as in one process. Outside training or
    without a process group it is plain ``BatchNorm2d``; the state dict is the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed_world() > 1):
            return super().forward(x)
        dims = (0, 2, 3)
        count = x.new_full((1,), x.numel() // x.shape[1], dtype=torch.float64)
        totals = sum_over_processes(torch.cat([x.sum(dims, dtype=torch.float64), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centered = x - mean.to(x.dtype).view(1, -1, 1, 1)
        var = sum_over_processes(centered.square().sum(dims, dtype=torch.float64)) / n
        if self.track_running_stats and self.running_mean is not None:
            self._update_running_stats(mean.detach(), var.detach() * n / (n - 1).clamp_min(1))
        scale = torch.rsqrt(var + self.eps).to(x.dtype)
        out = centered * scale.view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), momentum)


class GlobalBatchNormSync(LayerSync):
    """Lightning plugin: every ``BatchNorm2d`` becomes :class:`GlobalBatchNorm` for the fit.

    The swap changes the class only (same parameters and buffers), and :meth:`revert` undoes it.
    """

    def apply(self, model: nn.Module) -> nn.Module:
        for layer in model.modules():
            if type(layer) is nn.BatchNorm2d:
                layer.__class__ = GlobalBatchNorm
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        for layer in model.modules():
            if type(layer) is GlobalBatchNorm:
                layer.__class__ = nn.BatchNorm2d  # type: ignore[assignment]
        return model


def freeze_unused(net: nn.Module, in_channels: int, depth: int) -> list[str]:
    """Freeze the parameters a forward pass never reaches; return their names.

    smp builds an encoder's every stage but runs only ``depth`` of them (resnet18 at depth 4
    leaves ``layer4`` idle); DDP refuses parameters that get no gradient. One backward pass
    of a small zero input in eval mode (running statistics untouched) finds them.

    Args:
        net: The U-Net.
        in_channels: Input bands.
        depth: Encoder depth (the input side is ``2 ** (depth + 1)``).
    """
    was_training = net.training
    net.eval()
    side = 2 ** (depth + 1)
    with torch.enable_grad():
        net(torch.zeros(1, in_channels, side, side)).sum().backward()
    unused = [name for name, p in net.named_parameters() if p.requires_grad and p.grad is None]
    for p in net.parameters():
        p.grad = None
    for name, p in net.named_parameters():
        if name in unused:
            p.requires_grad_(False)
    net.train(was_training)
    return unused


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
        frozen = freeze_unused(self.net, self.arch.in_channels, self.arch.encoder_depth)
        if frozen:
            log.debug("frozen (unused at encoder_depth %d): %s", self.arch.encoder_depth, frozen)
        self.criterion = SegLoss(loss, bce_weight, dice_weight)
        # keys are prefixed: "train" would clash with nn.Module.train
        self.metrics = nn.ModuleDict(
            {f"m_{s}": split_metrics(f"{s}/") for s in ("train", "val", "test")}
        )

    @classmethod
    def from_config(cls, cfg: TrainConfig, in_channels: int, seed: int = 0) -> SegmentationModule:
        """Build from the ``train`` section; the initial weights depend on ``seed`` only.

        The global random state is left as it was.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
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
        # every process trains on its share of the batch but validates on the whole split
        loss = self.criterion(logits, y, global_batch=split == "train" and distributed_world() > 1)
        metrics: MetricCollection = self.metrics[f"m_{split}"]  # type: ignore[assignment]
        metrics.update(torch.sigmoid(logits.detach().float()), y.int())
        self.log(
            f"{split}/loss",
            loss,
            prog_bar=split != "test",
            on_step=split == "train",
            on_epoch=True,
            batch_size=x.shape[0],
            sync_dist=True,
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
