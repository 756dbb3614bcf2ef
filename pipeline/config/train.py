"""``train:`` section: the U-Net and its Lightning trainer."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import Section
from pipeline.config.encoders import encoder_problem
from pipeline.config.feedback import IgnoreLabelsConfig


class TrainConfig(Section):
    """Model and optimisation, devices and reproducibility.

    Several processes (DDP): ``devices`` x ``num_nodes`` > 1 trains with Lightning's DDP
    strategy, one process per device (``gloo`` on CPU, ``nccl`` on GPU). ``batch_size`` stays
    the global batch: each of the W processes takes ``batch_size / W`` tiles a step, its share
    of the same global sample sequence, and batch normalization statistics and the Dice sums
    span the global batch, so W processes train the model one process trains, up to float
    rounding (two CPU processes: probabilities within about 1e-3 after 4 steps). Batches are
    identical when the samples per epoch are a multiple of W (else the last is padded).
    Validation runs on the whole split in every process.

    - One machine: ``python -m pipeline train --config ... --set train.devices=2`` (or
      ``make train ARGS='--set train.devices=2'``); Lightning starts the other processes by
      re-running that command (``python -m pipeline all`` refuses to).
    - Several machines: run the earlier stages first, with ``run.data_root`` on a filesystem
      every node shares (rank 0 writes the checkpoints; every rank reads them on a resume).
      On each node run ``python -m pipeline train --config ... --set train.devices=D --set
      train.num_nodes=N`` with the environment ``MASTER_ADDR`` (node 0's host name),
      ``MASTER_PORT`` (a free port on it) and ``NODE_RANK`` (0..N-1). Or let a launcher start
      every process: ``torchrun --nnodes N --nproc-per-node D --node-rank R --master-addr HOST
      --master-port PORT -m pipeline train --config ... --set train.devices=D --set
      train.num_nodes=N``, or under SLURM ``srun python -m pipeline train ...`` in a batch job
      with ``--nodes=N --ntasks-per-node=D``.

    Rank 0 alone prepares the checkpoints folder (resume or clear) while the others wait;
    only rank 0 exports the model and writes the manifest.

    Reproducibility: the same config and seed give bit-identical weights on the same machine
    and software, in fresh processes and after a resume. Every random draw (initial weights,
    each epoch's sample order, each sample's crop and flip) comes from generators seeded by
    ``run.seed`` and the epoch, never from DataLoader workers or the global state; the thread
    count is fixed; Lightning's deterministic mode is on. What can still differ across
    machines: the CPU's instruction set (oneDNN/MKL pick other kernels for AVX2 and AVX-512),
    the thread and process counts (float sums in another order), the torch, Lightning and
    segmentation-models-pytorch versions, and GPU vs CPU (other kernels; bf16 on GPU).

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
        batch_size: Tiles per optimizer step over all processes (each of the W = devices x
            num_nodes processes takes batch_size / W; it must divide evenly).
        crop_size: Random training crops of this side (``None``: whole tiles); a multiple of
            ``2 ** encoder_depth``.
        samples_per_epoch: Training samples drawn per epoch (with replacement; each a fresh
            random crop and flip); ``None``: one pass over the training tiles.
        oversample_positive: Sampling weight of tiles containing farm pixels relative to
            negatives (1 = plain shuffling).
        num_workers: DataLoader worker processes (0 = load in the main process).
        preload_max_mb: Tiles are read into memory once when they fit in this many MiB.
        accelerator: Lightning accelerator (``auto`` picks the GPU when there is one).
        devices: Lightning devices per node: a count, ``-1`` (every GPU), a list such as
            ``"0,1"``, or ``auto`` (every GPU; one CPU process). More than one trains with DDP;
            on CPU each device is one process.
        num_nodes: Machines taking part (DDP across nodes; see above).
        threads: torch intra-op threads per process; ``None``: ``min(4, CPU cores / processes
            on this machine)``. Fixed rather than "all cores" because the thread count changes
            how float sums are split, so a fixed number keeps results reproducible on every
            machine with at least 4 cores (the demo U-Net gains little beyond 4 on CPU); it is
            recorded in the train manifest. Inter-op threads are set to 1 (nothing here runs
            operators in parallel).
        deterministic: Lightning's deterministic mode (``torch.use_deterministic_algorithms``):
            ``True`` fails on an operator without a deterministic kernel, ``"warn"`` warns and
            runs it; ``False`` allows faster non-deterministic kernels (cuDNN benchmarking).
        precision: ``auto`` picks ``bf16-mixed`` on GPU and ``32-true`` on CPU.
        channels_last: Use channels-last memory format on GPU (ignored on CPU).
        early_stopping_patience: Epochs without a lower validation loss before stopping (the
            checkpoint with the lowest validation loss is the one exported).
        threshold: Probability threshold exported with the model; ``auto`` is the one that
            maximizes pixel IoU on the validation split.
        log_every_n_steps: Logging interval in optimizer steps.
        ignore_labels: Leave suspect labels and strong candidates of an earlier run's label
            triage out of the loss (:class:`~pipeline.config.feedback.IgnoreLabelsConfig`;
            the review file's path alone will do). ``None`` (default): every label counts.
    """

    digest_optional: ClassVar[frozenset[str]] = frozenset({"ignore_labels"})

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
    num_nodes: int = Field(default=1, ge=1)
    threads: int | None = Field(default=None, ge=1)
    deterministic: bool | Literal["warn"] = True
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    channels_last: bool = True
    early_stopping_patience: int = Field(default=10, ge=1)
    threshold: float | Literal["auto"] = "auto"
    log_every_n_steps: int = Field(default=10, ge=1)
    ignore_labels: IgnoreLabelsConfig | None = None

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
