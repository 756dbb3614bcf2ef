"""Training data: the tiles index, band statistics, augmentations and the LightningDataModule.

Images are stored DN (uint16, reflectance x 10000, bands :data:`pipeline.bands.BANDS`); they are
standardized per band with the training split's statistics (the same ones exported with the
model, so training and prediction see identical inputs). Masks are uint8 (1 farm, 0 background).

Every random draw of the training data comes from the run seed: each epoch's sample sequence
and one augmentation seed per sample are drawn from a generator seeded by ``(seed, epoch)``
(:func:`epoch_draws`), and a sample's crop and flip from a generator seeded by its augmentation
seed. So the data a step sees depends neither on DataLoader workers nor on how many processes
share the epoch (:class:`EpochSampler` hands each rank its share of the same sequence).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Mapping, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.bands import BANDS
from pipeline.config import TrainConfig
from pipeline.errors import ConfigError, ModelError
from pipeline.geo.raster import read_raster
from pipeline.model.ignore import apply_ignore
from pipeline.model.records import (
    SPLIT_NAMES,
    BandStats,
    TileRecord,
    read_band_stats,
    read_tiles_index,
)

log = logging.getLogger(__name__)

__all__ = [
    "SPLIT_NAMES",
    "BandStats",
    "Draw",
    "EpochSampler",
    "TileDataset",
    "TileRecord",
    "TilesDataModule",
    "device_batch_size",
    "dihedral",
    "epoch_draws",
    "random_crop_offsets",
    "rank_share",
    "read_band_stats",
    "read_tiles_index",
    "seed_worker",
    "tile_bytes",
]

#: A training draw: ``(tile index, augmentation seed)``.
Draw = tuple[int, int]


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 symmetries of the square applied to the last two axes.

    Args:
        x: ``(..., H, W)`` tensor.
        k: ``0..7``; ``k % 4`` quarter turns, then a left-right flip when ``k >= 4``.
    """
    out = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if k >= 4 else out


def random_crop_offsets(
    height: int, width: int, size: int, generator: torch.Generator | None = None
) -> tuple[int, int]:
    """Upper-left ``(row, col)`` of a random ``size`` square inside ``(height, width)``."""
    row = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    col = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    return row, col


class TileDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Tiles as ``(image (C, H, W) float32 normalized, mask (1, H, W) float32)`` pairs.

    Indexed by a tile index or a :data:`Draw`; the crop and flip are drawn from a generator
    seeded by the draw's augmentation seed (by the tile index for a plain index), never from a
    global or per-worker random state.

    Args:
        records: Tiles to serve.
        stats: Normalization statistics (DN units).
        augment: Apply a random dihedral transform (jointly to image and mask).
        crop_size: Random crop side, or ``None`` for whole tiles.
        preload: Read every tile into memory once (uint16, as stored).
        ignore: Per patch id, bool ``(H, W)`` pixels to ignore: the mask holds
            :data:`~pipeline.model.ignore.IGNORE_VALUE` there (``train.ignore_labels``).
    """

    def __init__(
        self,
        records: Sequence[TileRecord],
        stats: BandStats,
        *,
        augment: bool = False,
        crop_size: int | None = None,
        preload: bool = False,
        ignore: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.records = list(records)
        self.ignore = dict(ignore or {})
        self.mean = torch.tensor(stats.mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(stats.std, dtype=torch.float32).view(-1, 1, 1)
        self.augment = augment
        self.crop_size = crop_size
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if preload:
            self._cache = [self._read(r) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @staticmethod
    def _read(record: TileRecord) -> tuple[np.ndarray, np.ndarray]:
        image, grid, _ = read_raster(record.image, expect_bands=BANDS)
        mask, mgrid, _ = read_raster(record.mask)
        if mask.shape[0] != 1 or mgrid.shape != grid.shape or mgrid.transform != grid.transform:
            raise ModelError(
                f"mask {record.mask} (bands {mask.shape[0]}, grid {mgrid.shape}) is not a "
                f"one-band mask on the grid of {record.image} ({grid.shape}); re-run `make tiles`"
            )
        return image, mask

    def __getitem__(self, key: int | Draw) -> tuple[torch.Tensor, torch.Tensor]:
        index, draw_seed = key if isinstance(key, tuple) else (key, key)
        image, mask = (
            self._cache[index] if self._cache is not None else self._read(self.records[index])
        )
        x = (torch.from_numpy(image.astype(np.float32)) - self.mean) / self.std
        y = torch.from_numpy((mask > 0).astype(np.float32))
        y = apply_ignore(y, self.ignore.get(self.records[index].patch_id))
        if self.crop_size is not None and self.crop_size > min(x.shape[-2:]):
            raise ModelError(
                f"train.crop_size {self.crop_size} exceeds tile {self.records[index].image} "
                f"of {tuple(x.shape[-2:])}; lower train.crop_size"
            )
        generator = torch.Generator().manual_seed(draw_seed)
        if self.crop_size is not None and self.crop_size < max(x.shape[-2:]):
            row, col = random_crop_offsets(x.shape[-2], x.shape[-1], self.crop_size, generator)
            x = x[:, row : row + self.crop_size, col : col + self.crop_size]
            y = y[:, row : row + self.crop_size, col : col + self.crop_size]
        if self.augment:
            k = int(torch.randint(0, 8, (1,), generator=generator))
            x, y = dihedral(x, k), dihedral(y, k)
        return x.contiguous(), y.contiguous()


def epoch_draws(
    n_tiles: int,
    num_samples: int,
    *,
    seed: int,
    epoch: int,
    weights: Sequence[float] | None = None,
    replacement: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch's global sample sequence and an augmentation seed per sample.

    Args:
        n_tiles: Tiles to draw from.
        num_samples: Draws (``n_tiles`` for a permutation).
        seed: The run seed.
        epoch: The epoch (each gets its own sequence; a resumed fit repeats it exactly).
        weights: Per-tile sampling weights (draws with replacement), or ``None``.
        replacement: Draw uniformly with replacement (when ``weights`` is ``None``).

    Returns:
        ``(tile indices (num_samples,) int64, augmentation seeds (num_samples,) int64)``.
    """
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]
    generator = torch.Generator().manual_seed(int(state))
    if weights is not None:
        w = torch.as_tensor(weights, dtype=torch.float64)
        indices = torch.multinomial(w, num_samples, replacement=True, generator=generator)
    elif replacement:
        indices = torch.randint(n_tiles, (num_samples,), generator=generator)
    else:
        indices = torch.randperm(n_tiles, generator=generator)[:num_samples]
    seeds = torch.randint(2**62, (len(indices),), generator=generator)
    return indices, seeds


def rank_share(n: int, rank: int, world_size: int) -> list[int]:
    """This rank's positions ``rank, rank + W, ...`` in a sequence of ``n``.

    The sequence is padded with its head to a multiple of ``W``, so every rank takes as many
    draws (with ``n`` a multiple of ``W`` nothing repeats). With per-rank batches of ``b``,
    the ranks' ``t``-th batches together hold positions ``t*b*W .. (t+1)*b*W - 1``: the
    ``t``-th global batch of ``b*W`` of one process.
    """
    total = math.ceil(n / world_size) * world_size
    return [p % n for p in range(rank, total, world_size)]


class EpochSampler(Sampler[Draw]):
    """This rank's share of each epoch's training draws (see :func:`epoch_draws`).

    Lightning calls :meth:`set_epoch` before each epoch.

    Args:
        n_tiles: Training tiles.
        num_samples: Draws per epoch over all ranks.
        seed: The run seed.
        weights: Per-tile sampling weights, or ``None``.
        replacement: Uniform draws with replacement (``weights`` ``None``).
        rank: This process's global rank.
        world_size: Processes sharing the epoch.
    """

    def __init__(
        self,
        n_tiles: int,
        num_samples: int,
        *,
        seed: int,
        weights: Sequence[float] | None = None,
        replacement: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n_tiles, self.num_samples, self.seed = n_tiles, num_samples, seed
        self.weights, self.replacement = weights, replacement
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.world_size)

    def __iter__(self) -> Iterator[Draw]:
        indices, seeds = epoch_draws(
            self.n_tiles,
            self.num_samples,
            seed=self.seed,
            epoch=self.epoch,
            weights=self.weights,
            replacement=self.replacement,
        )
        for p in rank_share(len(indices), self.rank, self.world_size):
            yield int(indices[p]), int(seeds[p])


def device_batch_size(batch_size: int, world_size: int) -> int:
    """Tiles per step in each of ``world_size`` processes for a global ``batch_size``.

    Raises:
        ConfigError: ``batch_size`` is not a multiple of ``world_size``.
    """
    if batch_size % world_size:
        raise ConfigError(
            f"train.batch_size {batch_size} does not split evenly over {world_size} processes "
            "(train.devices x train.num_nodes); it is the global batch, so set it to a "
            f"multiple of {world_size}, e.g. {max(1, round(batch_size / world_size)) * world_size}"
        )
    return batch_size // world_size


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and NumPy in a DataLoader worker from its torch seed.

    The torch seed is the loader's base seed (drawn from its seeded generator) plus
    ``worker_id``. The datasets here draw nothing from these states; this keeps any code that
    does reproducible.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def tile_bytes(records: Sequence[TileRecord], tile_pixels: int = 256 * 256) -> int:
    """Memory of ``records`` preloaded as stored (uint16 image + uint8 mask per pixel)."""
    return len(records) * tile_pixels * (2 * len(BANDS) + 1)


class TilesDataModule(L.LightningDataModule):
    """Train/val/test loaders over the tiles index.

    Args:
        records: Every tile of the index (split by ``record.split``).
        stats: Training-split band statistics.
        cfg: The ``train`` config section (batch size, crops, oversampling, workers, preload).
        seed: The run seed (sample order, augmentations, loader generators).
        ignore: Per patch id, pixels left out of the training and validation loss and of the
            validation threshold (:mod:`pipeline.model.ignore`); the un-augmented evaluation
            loaders (:meth:`eval_dataloader` of train and test) count every pixel.

    Under DDP (a trainer with ``world_size`` W attached) the training loader takes this rank's
    share of the epoch in batches of ``batch_size / W``; validation and test loaders serve the
    whole split in every process.
    """

    def __init__(
        self,
        records: Sequence[TileRecord],
        stats: BandStats,
        cfg: TrainConfig,
        seed: int,
        ignore: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.ignore = dict(ignore or {})
        self.records = {s: [r for r in records if r.split == s] for s in SPLIT_NAMES}
        self.stats = stats
        self.cfg = cfg
        self.seed = seed
        self.datasets: dict[str, TileDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        preload = tile_bytes([r for v in self.records.values() for r in v]) <= (
            self.cfg.preload_max_mb * 2**20
        )
        log.info(
            "tiles per split %s; preloaded: %s",
            {k: len(v) for k, v in self.records.items()},
            preload,
        )
        self.datasets["train"] = TileDataset(
            self.records["train"],
            self.stats,
            augment=True,
            crop_size=self.cfg.crop_size,
            preload=preload,
            ignore=self.ignore,
        )
        self.datasets["val"] = TileDataset(
            self.records["val"], self.stats, preload=preload, ignore=self.ignore
        )
        self.datasets["test"] = TileDataset(self.records["test"], self.stats, preload=preload)
        # the training tiles without augmentation, and both splits without ignored pixels, for
        # the per-split metrics after the fit
        for split in ("train", "val"):
            self.datasets[f"{split}_eval"] = TileDataset(self.records[split], self.stats)
            if preload:
                self.datasets[f"{split}_eval"]._cache = self.datasets[split]._cache

    def _loader(
        self, split: str, *, sampler: Sampler[Draw] | None = None, batch_size: int | None = None
    ) -> DataLoader:
        workers = self.cfg.num_workers
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size or self.cfg.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
            drop_last=False,
            generator=torch.Generator().manual_seed(self.seed),
            worker_init_fn=seed_worker if workers > 0 else None,
        )

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_sampler(self, rank: int = 0, world_size: int = 1) -> EpochSampler:
        """Shuffling, or positive oversampling when ``oversample_positive > 1``; seeded.

        ``samples_per_epoch`` draws that many samples with replacement.
        """
        records = self.records["train"]
        n = self.cfg.samples_per_epoch
        weights = None
        if self.cfg.oversample_positive > 1.0 and any(r.positive for r in records):
            weights = [self.cfg.oversample_positive if r.positive else 1.0 for r in records]
        return EpochSampler(
            len(records),
            n or len(records),
            seed=self.seed,
            weights=weights,
            replacement=n is not None,
            rank=rank,
            world_size=world_size,
        )

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._ranks()
        return self._loader(
            "train",
            sampler=self.train_sampler(rank, world_size),
            batch_size=device_batch_size(self.cfg.batch_size, world_size),
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def eval_dataloader(self, split: str) -> DataLoader:
        """Un-augmented whole tiles of ``split`` (``train`` included), in index order, with
        every pixel labelled (no ignore mask)."""
        return self._loader(split if split == "test" else f"{split}_eval")
