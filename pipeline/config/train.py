"""``train:`` section: the U-Net and its Lightning trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from pipeline.config.base import Section


class TrainConfig(Section):
    """Model and optimisation.

    Attributes:
        encoder: segmentation-models-pytorch encoder name.
        encoder_weights: Optional local weights file; nothing is ever downloaded.
        encoder_depth: Number of encoder stages (3-5).
        decoder_channels: Decoder widths, one per encoder stage.
        precision: ``auto`` picks ``bf16-mixed`` on GPU and ``32-true`` on CPU.
        crop_size: Random training crops of this side (``None``: whole tiles).
    """

    encoder: str = "resnet34"
    encoder_weights: Path | None = None
    encoder_depth: int = Field(default=5, ge=3, le=5)
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    loss: Literal["bce", "dice", "bce+dice"] = "bce+dice"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    schedule: Literal["cosine", "onecycle", "none"] = "cosine"
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=16, ge=1)
    crop_size: int | None = Field(default=None, ge=32)
    oversample_positive: float = Field(default=1.0, ge=1.0)
    num_workers: int = Field(default=0, ge=0)
    accelerator: str = "auto"
    devices: int | str = "auto"
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    early_stopping_patience: int = Field(default=10, ge=1)
