"""Helpers for the model tests: a tiny fake tiles stage written with the real raster I/O."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import box

from pipeline.bands import BANDS
from pipeline.config import RunConfig, load_config
from pipeline.geo.raster import Grid, write_cog
from pipeline.manifest import Manifest
from pipeline.paths import RunPaths

#: A tiny, fast U-Net for tests.
TINY_TRAIN = [
    "train.encoder=resnet18",
    "train.encoder_depth=3",
    "train.decoder_channels=[32,16,8]",
    "train.batch_size=4",
    "train.epochs=2",
    "train.crop_size=32",
    "train.lr=0.003",
    "train.num_workers=0",
    "train.samples_per_epoch=null",
    "train.oversample_positive=1.0",
]

#: Farm pixels are dark in visible/NIR and bright in SWIR; background the other way round.
FARM = np.array([900, 1000, 1100, 1300, 1400, 1500, 1600, 1650, 2600, 2400], np.float32)
GROUND = np.array([500, 800, 700, 1500, 2600, 3000, 3200, 3300, 2000, 1200], np.float32)


def patch_grid(index: int, size: int = 64, epsg: int = 32618) -> Grid:
    """A ``size`` x ``size`` grid at 10 m, patches laid out in a row."""
    x0 = 440_000.0 + index * size * 10.0
    return Grid(CRS.from_epsg(epsg), Affine(10.0, 0.0, x0, 0.0, -10.0, 4_170_000.0), size, size)


def synth_patch(
    rng: np.random.Generator, size: int, positive: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A 10-band DN image and its 0/1 mask: one rectangular farm on noisy ground."""
    mask = np.zeros((size, size), np.uint8)
    if positive:
        h, w = rng.integers(size // 5, size // 2, 2)
        r, c = rng.integers(0, size - h), rng.integers(0, size - w)
        mask[r : r + h, c : c + w] = 1
    image = np.where(mask[None] > 0, FARM[:, None, None], GROUND[:, None, None])
    image = image * rng.normal(1.0, 0.08, (1, size, size)) + rng.normal(0, 60, image.shape)
    return np.clip(image, 1, 10000).astype(np.uint16), mask


def make_run(
    tmp: Path,
    *,
    n_per_split: dict[str, int] | None = None,
    size: int = 64,
    seed: int = 0,
    overrides: list[str] | None = None,
) -> tuple[RunConfig, RunPaths]:
    """Write patches, masks, a tiles index, band stats and a tiles manifest under ``tmp``."""
    n_per_split = n_per_split or {"train": 8, "val": 4, "test": 4}
    cfg = load_config(
        "configs/demo.yaml", [f"run.data_root={tmp}", "run.name=t", *TINY_TRAIN, *(overrides or [])]
    )
    paths = RunPaths(cfg.run.data_root, cfg.run.name)
    rng = np.random.default_rng(seed)
    rows, train_pixels = [], []
    k = 0
    for split, n in n_per_split.items():
        for i in range(n):
            pid = f"p{k:05d}"
            grid = patch_grid(k, size)
            image, mask = synth_patch(rng, size, positive=i % 4 != 3)
            write_cog(paths.image(pid), image, grid, band_names=BANDS, nodata=0)
            write_cog(
                paths.mask(pid),
                mask[None],
                grid,
                band_names=("farm",),
                overview_resampling="nearest",
            )
            if split == "train":
                train_pixels.append(image.reshape(len(BANDS), -1))
            rows.append(
                {
                    "patch_id": pid,
                    "split": split,
                    "block": f"b{k}",
                    "image": paths.relative(paths.image(pid)),
                    "scl": "",
                    "mask": paths.relative(paths.mask(pid)),
                    "coverage": float(mask.mean()),
                    "farm_pixels": int(mask.sum()),
                    "farm_ids": "[]",
                    "geometry": box(*grid.bounds),
                }
            )
            k += 1
    frame = gpd.GeoDataFrame(rows, crs="EPSG:32618").to_crs(4326)
    paths.tiles_index.parent.mkdir(parents=True, exist_ok=True)
    frame.to_file(paths.tiles_index, layer="tiles", driver="GPKG")
    stack = np.concatenate(train_pixels, axis=1).astype(np.float64)
    paths.band_stats.write_text(
        json.dumps(
            {
                "bands": list(BANDS),
                "mean": stack.mean(1).tolist(),
                "std": stack.std(1).tolist(),
                "n_pixels": int(stack.shape[1]),
            }
        )
    )
    Manifest("tiles", "x", {}, [], {}, 0.0, {}).write(paths.manifest("tiles"))
    return cfg, paths
