"""COG reads organised by source block, so each block of each needed asset is read once.

The client opens each needed asset's header once (:class:`AssetIndex`) and computes, per chunk,
the source window covering the chunk's read grid (plus a 2-pixel margin for bilinear) and the
COG blocks (its internal tiles) that window touches. Each block is one Dask task
(:func:`read_block`, keyed by asset and block, so chunks that share a block, halos included,
share its one read). A chunk task pastes its blocks into one in-memory GeoTIFF window with the
asset's transform, CRS and nodata, and resamples it into the chunk grid with the very function
fetch uses for a patch (:func:`pipeline.stac.read.resample_into_grid`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import DatasetReader, MemoryFile
from rasterio.windows import Window, from_bounds

from pipeline.errors import MapError
from pipeline.geo.gdal_env import gdal_env
from pipeline.geo.raster import Grid
from pipeline.net import RetryPolicy, call_with_retries
from pipeline.stac.read import resample_into_grid, source_window

#: Source pixels read beyond a chunk's read grid on every side (bilinear needs one).
MARGIN_PX = 2


@dataclass(frozen=True)
class Asset:
    """One band of one item.

    Attributes:
        item_id: The STAC item.
        band: Band id (``B04``, ``SCL``).
        href: Readable href (signed when the provider needs it).
    """

    item_id: str
    band: str
    href: str

    @property
    def token(self) -> str:
        """Short stable id of the href (part of block task keys)."""
        return hashlib.sha1(self.href.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AssetInfo:
    """An asset's header: enough to compute windows and blocks without reopening it."""

    asset: Asset
    crs: CRS
    transform: Affine
    width: int
    height: int
    block_shape: tuple[int, int]
    nodata: float | None
    dtype: str

    def window(self, left: float, bottom: float, right: float, top: float) -> Window:
        """The (fractional) window of map bounds, as ``DatasetReader.window``."""
        return from_bounds(left, bottom, right, top, self.transform)


@dataclass(frozen=True)
class SourceWindow:
    """Where one asset is read for one chunk, and which of its blocks that takes.

    Attributes:
        info: The asset's header.
        window: ``(col_off, row_off, width, height)`` in the asset's pixels.
        blocks: ``(block col, block row)`` of every block the window touches.
    """

    info: AssetInfo
    window: tuple[int, int, int, int]
    blocks: tuple[tuple[int, int], ...]

    def block_key(self, block: tuple[int, int]) -> str:
        """The Dask key of a block's read task."""
        return f"block-{self.info.asset.token}-{block[0]}-{block[1]}"


def open_info(asset: Asset, policy: RetryPolicy, options: Mapping[str, str | int]) -> AssetInfo:
    """Read an asset's header (once, with retries).

    Raises:
        MapError: the asset cannot be opened after the retries.
    """

    def attempt() -> AssetInfo:
        with gdal_env(**options), rasterio.open(asset.href) as src:
            return AssetInfo(
                asset,
                src.crs,
                src.transform,
                src.width,
                src.height,
                tuple(src.block_shapes[0]),  # type: ignore[arg-type]
                src.nodata,
                src.dtypes[0],
            )

    try:
        return call_with_retries(attempt, policy, what=f"open {asset.band} of {asset.item_id}")
    except rasterio.errors.RasterioError as err:
        raise MapError(
            f"cannot open {asset.band} of STAC item {asset.item_id} at {asset.href}: {err}. "
            "Check the catalog and the network, then re-run `make map`: finished chunks are kept"
        ) from err


def blocks_of(window: Window | tuple[int, int, int, int], block_shape: tuple[int, int]) -> tuple:
    """``(block col, block row)`` of every block a pixel window touches, row-major."""
    c0, r0, w, h = (
        (window.col_off, window.row_off, window.width, window.height)
        if isinstance(window, Window)
        else window
    )
    bh, bw = block_shape
    return tuple(
        (bx, by)
        for by in range(int(r0) // bh, (int(r0) + int(h) - 1) // bh + 1)
        for bx in range(int(c0) // bw, (int(c0) + int(w) - 1) // bw + 1)
    )


def plan_window(info: AssetInfo, grid: Grid) -> SourceWindow | None:
    """The window (and blocks) of ``info`` covering ``grid``; None when they do not meet."""
    win = source_window(cast(DatasetReader, info), grid, pad=MARGIN_PX)
    if win is None:
        return None
    box = (int(win.col_off), int(win.row_off), int(win.width), int(win.height))
    return SourceWindow(info, box, blocks_of(box, info.block_shape))


def block_window(info: AssetInfo, block: tuple[int, int]) -> Window:
    """The pixel window of one block (clipped at the raster's edge)."""
    bh, bw = info.block_shape
    col, row = block[0] * bw, block[1] * bh
    return Window(col, row, min(bw, info.width - col), min(bh, info.height - row))


def read_block(
    info: AssetInfo,
    block: tuple[int, int],
    policy: RetryPolicy,
    options: Mapping[str, str | int],
) -> np.ndarray:
    """Read one block of one asset (a Dask task), retried on transient errors.

    Returns:
        ``(h, w)`` array of the asset's dtype.

    Raises:
        MapError: the block still cannot be read (names the asset, its URL and the fix).
    """
    asset = info.asset
    window = block_window(info, block)

    def attempt() -> np.ndarray:
        with gdal_env(**options), rasterio.open(asset.href) as src:
            return src.read(1, window=window)

    try:
        return call_with_retries(
            attempt, policy, what=f"read block {block} of {asset.band} of {asset.item_id}"
        )
    except rasterio.errors.RasterioError as err:
        raise MapError(
            f"cannot read block {block} of {asset.band} of STAC item {asset.item_id} at "
            f"{asset.href} ({str(err).splitlines()[0] if str(err) else type(err).__name__}). "
            "The COG is corrupt or unreachable; fix or replace it, then re-run `make map`: "
            "finished chunks are kept"
        ) from err


def paste_blocks(sw: SourceWindow, blocks: Sequence[np.ndarray]) -> np.ndarray:
    """The window's pixels, assembled from its blocks (in ``sw.blocks`` order)."""
    c0, r0, w, h = sw.window
    bh, bw = sw.info.block_shape
    out = np.zeros((h, w), sw.info.dtype)
    for (bx, by), data in zip(sw.blocks, blocks, strict=True):
        x0, y0 = bx * bw - c0, by * bh - r0  # block origin in window pixels
        xs, ys = max(0, x0), max(0, y0)
        xe, ye = min(w, x0 + data.shape[1]), min(h, y0 + data.shape[0])
        if xe > xs and ye > ys:
            out[ys:ye, xs:xe] = data[ys - y0 : ye - y0, xs - x0 : xe - x0]
    return out


def resample_window(
    sw: SourceWindow,
    blocks: Sequence[np.ndarray],
    grid: Grid,
    resampling: Resampling,
    dtype: str,
) -> np.ndarray:
    """Resample one source window (from its blocks) into ``grid`` exactly as fetch would.

    Returns:
        ``(grid.height, grid.width)`` array of ``dtype``; nodata 0 where the asset has none.
    """
    data = paste_blocks(sw, blocks)
    c0, r0, w, h = sw.window
    info = sw.info
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": 1,
        "dtype": info.dtype,
        "crs": info.crs,
        "transform": info.transform @ Affine.translation(c0, r0),
        "nodata": info.nodata,
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(data, 1)
        with mem.open() as src:
            return resample_into_grid(src, grid, resampling, dtype)


def resampling_for(band: str) -> Resampling:
    """Nearest for SCL (classes), bilinear for reflectance: the fetch stage's rule."""
    return Resampling.nearest if band == "SCL" else Resampling.bilinear
