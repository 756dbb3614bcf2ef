"""The tiles index and band statistics as typed records (no torch or Lightning imports).

Paths in the index are relative to the run folder; records carry absolute paths.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.bands import BANDS
from pipeline.errors import GeoMismatchError, MissingArtifactError, ModelError
from pipeline.geo.raster import Grid, read_raster

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class TileRecord:
    """One row of the tiles index.

    Attributes:
        patch_id: Patch id (``p00000``).
        split: ``train``, ``val`` or ``test``.
        image: Absolute path of the 10-band uint16 patch.
        mask: Absolute path of the uint8 label mask on the same grid.
        positive: The mask has at least one farm pixel.
    """

    patch_id: str
    split: str
    image: Path
    mask: Path
    positive: bool


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and standard deviation in stored DN units over the training split."""

    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def read_tiles_index(index_path: Path, run_root: Path) -> list[TileRecord]:
    """Read the tiles stage's index (layer ``tiles``) into records with absolute paths.

    Raises:
        MissingArtifactError: the index does not exist.
        ModelError: a required column is missing or a split name is unknown.
    """
    import pyogrio

    if not Path(index_path).is_file():
        raise MissingArtifactError("the tiles index", index_path, "tiles")
    frame = pyogrio.read_dataframe(index_path, layer="tiles", read_geometry=False)
    missing = {"patch_id", "split", "image", "mask"} - set(frame.columns)
    if missing:
        raise ModelError(
            f"tiles index {index_path} lacks columns {sorted(missing)}; re-run `make tiles`"
        )
    bad = sorted(set(frame["split"]) - set(SPLIT_NAMES))
    if bad:
        raise ModelError(
            f"tiles index {index_path} has unknown splits {bad}; expected {list(SPLIT_NAMES)}. "
            "Re-run `make tiles`"
        )
    if "farm_pixels" in frame.columns:
        positive = frame["farm_pixels"].fillna(0).astype(float) > 0
    elif "coverage" in frame.columns:
        positive = frame["coverage"].fillna(0).astype(float) > 0
    else:
        positive = frame["patch_id"].map(lambda _: False)
    return [
        TileRecord(str(pid), str(split), run_root / str(img), run_root / str(msk), bool(pos))
        for pid, split, img, msk, pos in zip(
            frame["patch_id"],
            frame["split"],
            frame["image"],
            frame["mask"],
            positive,
            strict=True,
        )
    ]


def read_band_stats(path: Path) -> BandStats:
    """Read ``band_stats.json`` and check it describes :data:`BANDS` with positive stds.

    Raises:
        MissingArtifactError: the file does not exist.
        ModelError: bands, lengths or values are wrong.
    """
    if not Path(path).is_file():
        raise MissingArtifactError("the band statistics", path, "tiles")
    raw = json.loads(Path(path).read_text())
    bands = tuple(raw.get("bands", ()))
    mean = tuple(float(v) for v in raw.get("mean", ()))
    std = tuple(float(v) for v in raw.get("std", ()))
    if bands != BANDS or len(mean) != len(BANDS) or len(std) != len(BANDS):
        raise ModelError(
            f"band statistics {path} describe bands {list(bands)} ({len(mean)} means, "
            f"{len(std)} stds) but the pipeline uses {list(BANDS)}; re-run `make tiles`"
        )
    if not all(np.isfinite(mean)) or not all(s > 0 and np.isfinite(s) for s in std):
        raise ModelError(
            f"band statistics {path} have non-finite means or non-positive stds {list(std)}; "
            "the training split is empty or constant. Re-run `make tiles` with more patches"
        )
    return BandStats(bands, mean, std)


def read_label_mask(record: TileRecord, grid: Grid) -> np.ndarray:
    """The label mask of ``record`` as bool ``(H, W)`` (True = farm), checked to lie on ``grid``.

    Raises:
        GeoMismatchError: the mask's CRS, transform or shape differ from the image's.
    """
    mask, mgrid, _ = read_raster(record.mask)
    if mgrid != grid:
        raise GeoMismatchError(
            f"label mask {record.mask} is on {mgrid.crs} {mgrid.transform} {mgrid.shape} but "
            f"patch {record.image} is on {grid.crs} {grid.transform} {grid.shape}; re-run "
            "`make tiles` so masks are rasterized on the patch grids"
        )
    return mask[0] > 0
