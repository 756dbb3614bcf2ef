"""Training data: the tiles index, band statistics, augmentations and the LightningDataModule.

Images are stored DN (uint16, reflectance x 10000, bands :data:`pipeline.bands.BANDS`); they are
standardized per band with the training split's statistics (the same ones exported with the
model, so training and prediction see identical inputs). Masks are uint8 (1 farm, 0 background).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, WeightedRandomSampler

from pipeline.bands import BANDS
from pipeline.config import TrainConfig
from pipeline.errors import ModelError
from pipeline.geo.raster import read_raster
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
    "TileDataset",
    "TileRecord",
    "TilesDataModule",
    "dihedral",
    "random_crop_offsets",
    "read_band_stats",
    "read_tiles_index",
    "tile_bytes",
]


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

    Args:
        records: Tiles to serve.
        stats: Normalization statistics (DN units).
        augment: Apply a random dihedral transform (jointly to image and mask).
        crop_size: Random crop side, or ``None`` for whole tiles.
        preload: Read every tile into memory once (uint16, as stored).
    """

    def __init__(
        self,
        records: Sequence[TileRecord],
        stats: BandStats,
        *,
        augment: bool = False,
        crop_size: int | None = None,
        preload: bool = False,
    ) -> None:
        self.records = list(records)
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

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = (
            self._cache[index] if self._cache is not None else self._read(self.records[index])
        )
        x = (torch.from_numpy(image.astype(np.float32)) - self.mean) / self.std
        y = torch.from_numpy((mask > 0).astype(np.float32))
        if self.crop_size is not None and self.crop_size > min(x.shape[-2:]):
            raise ModelError(
                f"train.crop_size {self.crop_size} exceeds tile {self.records[index].image} "
                f"of {tuple(x.shape[-2:])}; lower train.crop_size"
            )
        if self.crop_size is not None and self.crop_size < max(x.shape[-2:]):
            row, col = random_crop_offsets(x.shape[-2], x.shape[-1], self.crop_size)
            x = x[:, row : row + self.crop_size, col : col + self.crop_size]
            y = y[:, row : row + self.crop_size, col : col + self.crop_size]
        if self.augment:
            k = int(torch.randint(0, 8, (1,)))
            x, y = dihedral(x, k), dihedral(y, k)
        return x.contiguous(), y.contiguous()


def tile_bytes(records: Sequence[TileRecord], tile_pixels: int = 256 * 256) -> int:
    """Memory of ``records`` preloaded as stored (uint16 image + uint8 mask per pixel)."""
    return len(records) * tile_pixels * (2 * len(BANDS) + 1)


class TilesDataModule(L.LightningDataModule):
    """Train/val/test loaders over the tiles index.

    Args:
        records: Every tile of the index (split by ``record.split``).
        stats: Training-split band statistics.
        cfg: The ``train`` config section (batch size, crops, oversampling, workers, preload).
        seed: Seed of the positive-oversampling sampler.
    """

    def __init__(
        self, records: Sequence[TileRecord], stats: BandStats, cfg: TrainConfig, seed: int
    ) -> None:
        super().__init__()
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
        )
        for split in ("val", "test"):
            self.datasets[split] = TileDataset(self.records[split], self.stats, preload=preload)
        # the training tiles without augmentation, for per-split metrics after the fit
        self.datasets["train_eval"] = TileDataset(self.records["train"], self.stats)
        if preload:
            self.datasets["train_eval"]._cache = self.datasets["train"]._cache

    def _loader(self, split: str, *, sampler: Sampler[int] | None = None) -> DataLoader:
        workers = self.cfg.num_workers
        return DataLoader(
            self.datasets[split],
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
            drop_last=False,
        )

    def train_sampler(self) -> Sampler[int]:
        """Shuffling, or positive oversampling when ``oversample_positive > 1``; seeded.

        ``samples_per_epoch`` draws that many samples with replacement.
        """
        generator = torch.Generator().manual_seed(self.seed)
        records = self.records["train"]
        n = self.cfg.samples_per_epoch
        if self.cfg.oversample_positive > 1.0 and any(r.positive for r in records):
            weights = [self.cfg.oversample_positive if r.positive else 1.0 for r in records]
            return WeightedRandomSampler(
                weights, n or len(records), replacement=True, generator=generator
            )
        if n is not None:
            return RandomSampler(records, replacement=True, num_samples=n, generator=generator)
        return RandomSampler(records, generator=generator)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", sampler=self.train_sampler())

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def eval_dataloader(self, split: str) -> DataLoader:
        """Un-augmented whole tiles of ``split`` (``train`` included), in index order."""
        return self._loader("train_eval" if split == "train" else split)
