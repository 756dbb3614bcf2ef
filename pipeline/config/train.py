"""``train:`` section: the U-Net and its Lightning trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import Section
from pipeline.config.encoders import encoder_problem


class TrainConfig(Section):
    """Model and optimisation.

    Attributes:
        encoder: segmentation-models-pytorch encoder name.
        encoder_weights: Optional local encoder weights file (a state dict saved with
            ``torch.save``, loaded with ``weights_only=True``); nothing is ever downloaded.
        encoder_weights_bands: Band order of the weights file's first convolution, e.g.
            ``[B04, B03, B02]`` for RGB weights; required with ``encoder_weights``. Bands the
            file lacks get the mean of its input filters.
        encoder_depth: Number of encoder stages (3-5).
        decoder_channels: Decoder widths, one per encoder stage.
        loss: ``bce``, ``dice`` or their weighted sum ``bce+dice``.
        bce_weight: Weight of the BCE term in ``bce+dice``.
        dice_weight: Weight of the Dice term in ``bce+dice``.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        schedule: Per-step learning-rate schedule.
        epochs: Maximum number of epochs.
        batch_size: Tiles per step (per device).
        crop_size: Random training crops of this side (``None``: whole tiles); a multiple of
            ``2 ** encoder_depth``.
        samples_per_epoch: Training samples drawn per epoch (with replacement; each a fresh
            random crop and flip); ``None``: one pass over the training tiles.
        oversample_positive: Sampling weight of tiles containing farm pixels relative to
            negatives (1 = plain shuffling).
        num_workers: DataLoader worker processes (0 = load in the main process).
        preload_max_mb: Tiles are read into memory once when they fit in this many MiB.
        accelerator: Lightning accelerator (``auto`` picks the GPU when there is one).
        devices: Lightning devices; more than one GPU trains with DDP.
        precision: ``auto`` picks ``bf16-mixed`` on GPU and ``32-true`` on CPU.
        channels_last: Use channels-last memory format on GPU (ignored on CPU).
        early_stopping_patience: Epochs without a lower validation loss before stopping (the
            checkpoint with the lowest validation loss is the one exported).
        threshold: Probability threshold exported with the model; ``auto`` is the one that
            maximizes pixel IoU on the validation split.
        log_every_n_steps: Logging interval in optimizer steps.
    """

    encoder: str = "resnet34"
    encoder_weights: Path | None = None
    encoder_weights_bands: tuple[str, ...] | None = None
    encoder_depth: int = Field(default=5, ge=3, le=5)
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    loss: Literal["bce", "dice", "bce+dice"] = "bce+dice"
    bce_weight: float = Field(default=1.0, ge=0)
    dice_weight: float = Field(default=1.0, ge=0)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    schedule: Literal["cosine", "onecycle", "none"] = "cosine"
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=16, ge=1)
    crop_size: int | None = Field(default=None, ge=32)
    samples_per_epoch: int | None = Field(default=None, ge=1)
    oversample_positive: float = Field(default=1.0, ge=1.0)
    num_workers: int = Field(default=0, ge=0)
    preload_max_mb: float = Field(default=2048.0, ge=0)
    accelerator: str = "auto"
    devices: int | str = "auto"
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    channels_last: bool = True
    early_stopping_patience: int = Field(default=10, ge=1)
    threshold: float | Literal["auto"] = "auto"
    log_every_n_steps: int = Field(default=10, ge=1)

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, name: str) -> str:
        problem = encoder_problem(name)
        if problem:
            raise ValueError(problem)
        return name

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if len(self.decoder_channels) != self.encoder_depth:
            raise ValueError(
                f"train.decoder_channels has {len(self.decoder_channels)} entries but "
                f"train.encoder_depth is {self.encoder_depth}; give one width per stage, e.g. "
                f"{list((256, 128, 64, 32, 16)[5 - self.encoder_depth :])}"
            )
        factor = 2**self.encoder_depth
        if self.crop_size is not None and self.crop_size % factor:
            raise ValueError(
                f"train.crop_size {self.crop_size} is not a multiple of 2**encoder_depth = "
                f"{factor}; use e.g. {max(factor, self.crop_size // factor * factor)}"
            )
        if (self.encoder_weights is None) != (self.encoder_weights_bands is None):
            raise ValueError(
                "train.encoder_weights and train.encoder_weights_bands go together: set both "
                "(the weights file and the band order of its first convolution) or neither"
            )
        if isinstance(self.threshold, float) and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"train.threshold {self.threshold} must be in (0, 1) or 'auto'")
        return self
