"""Sliding-window inference over rasters of any size, with blending and bounded memory.

A raster (a 256 x 256 patch, a mosaic, a whole 10980 x 10980 scene) is cut into ``window``
squares overlapping by ``overlap`` pixels; the last window of a row/column is shifted back to
end on the raster edge, and a raster smaller than the window is padded by reflection. Each
window's probabilities are weighted by a blend window that is positive everywhere (a Hann
window sampled at pixel centres, so it never reaches zero), accumulated, and divided by the
accumulated weights exactly once per pixel: a constant model yields the same constant
everywhere, whatever the overlap.

Memory is bounded by one strip of ``window`` rows across the raster: windows are processed
row by row, finished rows are written out and the strip rolls on. Outputs are written by
windows into a tiled temporary GeoTIFF, then copied into a COG with the export profile of
:mod:`pipeline.geo.raster` (the same options :func:`pipeline.geo.raster.write_cog` uses).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.shutil
import torch
from rasterio.crs import CRS
from rasterio.windows import Window
from torch import nn

from pipeline.errors import GeoMismatchError, ModelError, RasterError
from pipeline.geo.raster import COG_OPTIONS, BandEncoding, Grid
from pipeline.geo.styles import MASK_ENCODING, MASK_NODATA
from pipeline.io import atomic_path
from pipeline.model.io import ModelMeta, check_bands, normalize

log = logging.getLogger(__name__)

BlendKind = Literal["hann", "uniform"]

#: Rows per block when thresholding a probability raster.
MASK_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class WindowSpec:
    """Sliding-window settings.

    Attributes:
        window: Window side in pixels.
        overlap: Overlap of neighbouring windows in pixels (``< window``).
        blend: ``hann`` or ``uniform`` weights.
        batch_size: Windows per forward pass (halved on out-of-memory).
    """

    window: int = 256
    overlap: int = 64
    blend: BlendKind = "hann"
    batch_size: int = 8


def window_offsets(length: int, window: int, overlap: int) -> list[int]:
    """Start offsets of windows along one axis of ``length`` pixels.

    Steps by ``window - overlap``; the last window ends exactly on the edge. A length not
    larger than ``window`` gives ``[0]`` (the caller pads).
    """
    if length <= window:
        return [0]
    stride = window - overlap
    offsets = list(range(0, length - window + 1, stride))
    if offsets[-1] != length - window:
        offsets.append(length - window)
    return offsets


def blend_weights(window: int, kind: BlendKind = "hann") -> np.ndarray:
    """``(window, window)`` float64 weights, positive everywhere.

    ``hann``: the outer product of ``sin²(π (i + 0.5) / window)``: 1 at the centre, small but
    never zero at the edges, so every pixel of every window counts. ``uniform``: ones.
    """
    if kind == "uniform":
        return np.ones((window, window), np.float64)
    ramp = np.sin(np.pi * (np.arange(window) + 0.5) / window) ** 2
    return np.outer(ramp, ramp)


def weight_sum(height: int, width: int, spec: WindowSpec) -> np.ndarray:
    """Accumulated blend weight of every pixel of a ``(height, width)`` raster (for checks)."""
    weights = blend_weights(spec.window, spec.blend)
    total = np.zeros((height, width), np.float64)
    for y in window_offsets(height, spec.window, spec.overlap):
        for x in window_offsets(width, spec.window, spec.overlap):
            h, w = min(spec.window, height - y), min(spec.window, width - x)
            total[y : y + h, x : x + w] += weights[:h, :w]
    return total


def fit_window(spec: WindowSpec, height: int, width: int, factor: int) -> WindowSpec:
    """Shrink the window to a raster smaller than it (rounded up to a multiple of ``factor``).

    A 64 x 64 patch is then predicted in one 64 x 64 window instead of a padded 256 x 256 one.
    """
    side = -(-max(height, width) // factor) * factor
    if side >= spec.window:
        return spec
    return WindowSpec(side, min(spec.overlap, side // 2), spec.blend, spec.batch_size)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device when available, else CPU; otherwise ``name``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA (and CPU allocator) out-of-memory errors."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


class Predictor:
    """Batched probabilities from a model emitting logits on normalized input.

    Args:
        model: ``(B, C, H, W)`` normalized input -> ``(B, 1, H, W)`` logits.
        meta: Normalization statistics and band order.
        device: Where the model runs; on CUDA it runs in bf16 autocast, channels-last.
        batch_size: Windows per forward pass; halved (with a warning) on out-of-memory.
    """

    def __init__(
        self, model: nn.Module, meta: ModelMeta, device: torch.device, batch_size: int = 8
    ) -> None:
        self.meta = meta
        self.device = device
        self.cuda = device.type == "cuda"
        self.model = model.to(device).eval()
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.batch_size = batch_size
        self.halvings = 0

    def _forward(self, x_dn: np.ndarray) -> np.ndarray:
        x = normalize(torch.from_numpy(x_dn.astype(np.float32)).to(self.device), self.meta)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else nullcontext()
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast:
            logits = self.model(x)
        return torch.sigmoid(logits.float())[:, 0].cpu().numpy()

    def __call__(self, x_dn: np.ndarray) -> np.ndarray:
        """Stored DN ``(B, C, H, W)`` -> probabilities ``(B, H, W)`` float32.

        Raises:
            ModelError: out of memory even with a batch of one window.
        """
        out: list[np.ndarray] = []
        start = 0
        while start < len(x_dn):
            chunk = x_dn[start : start + self.batch_size]
            try:
                out.append(self._forward(chunk))
            except RuntimeError as err:
                if not is_out_of_memory(err):
                    raise
                if self.cuda:
                    torch.cuda.empty_cache()
                if self.batch_size == 1:
                    raise ModelError(
                        f"out of memory predicting a single {chunk.shape[-2]}x{chunk.shape[-1]} "
                        f"window on {self.device}; lower predict.window or use a larger device"
                    ) from err
                self.batch_size //= 2
                self.halvings += 1
                log.warning(
                    "out of memory on %s; halving the prediction batch to %d",
                    self.device,
                    self.batch_size,
                )
                continue
            start += len(chunk)
        return np.concatenate(out).astype(np.float32, copy=False)


@contextmanager
def streaming_cog(
    path: Path,
    grid: Grid,
    *,
    dtype: str,
    band_name: str,
    nodata: float | None,
    tags: Mapping[str, Any] | None = None,
    overview_resampling: str | None = None,
    encoding: BandEncoding | None = None,
) -> Iterator[rasterio.io.DatasetWriter]:
    """A one-band raster to write by windows; becomes a COG at ``path`` atomically on exit.

    Yields a rasterio dataset (tiled GeoTIFF in a temporary folder beside ``path``); its band
    gets ``encoding`` (colour table, band metadata) when given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
    try:
        tmp = tmpdir / "stream.tif"
        profile = {
            "driver": "GTiff",
            "count": 1,
            "dtype": dtype,
            "height": grid.height,
            "width": grid.width,
            "crs": grid.crs,
            "transform": grid.transform,
            "nodata": nodata,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "BIGTIFF": "IF_SAFER",
        }
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.set_band_description(1, band_name)
            dst.update_tags(**{k: str(v) for k, v in (tags or {}).items()})
            if encoding is not None:
                encoding.apply(dst)
            yield dst
        options = dict(COG_OPTIONS)
        if overview_resampling:
            options["overview_resampling"] = overview_resampling
        if np.dtype(dtype).kind == "f":
            options["predictor"] = "FLOATING_POINT"
        if min(grid.shape) < 512:
            options["overviews"] = "NONE" if min(grid.shape) <= 256 else "AUTO"
        with atomic_path(path) as out:
            rasterio.shutil.copy(tmp, out, **options)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


@dataclass(frozen=True)
class RasterPrediction:
    """What :func:`predict_raster` did.

    Attributes:
        grid: The input (and output) grid.
        windows: Windows predicted.
        nodata_pixels: Input pixels that are nodata in every band (probability NaN there).
        batch_size: Batch size in use at the end (smaller than asked after out-of-memory).
    """

    grid: Grid
    windows: int
    nodata_pixels: int
    batch_size: int


def check_input(
    src: rasterio.io.DatasetReader, meta: ModelMeta, path: Path, expected_crs: CRS | None
) -> None:
    """Refuse inputs that would give a wrong map: bands, dtype, CRS.

    Raises:
        ModelError: band count or order differs from the model's.
        RasterError: the raster is not stored DN (integer) data.
        GeoMismatchError: the CRS is missing or not ``expected_crs``.
    """
    check_bands(meta, tuple(d or "" for d in src.descriptions), path)
    if any(np.dtype(d).kind not in "ui" for d in src.dtypes):
        raise RasterError(
            f"{path} holds {src.dtypes[0]} values but the model expects stored DN integers "
            "(reflectance x 10000, uint16); re-fetch the patch or convert it with x 10000"
        )
    if src.crs is None:
        raise GeoMismatchError(
            f"{path} has no CRS; the prediction could not be georeferenced. "
            "Re-fetch it (make fetch)"
        )
    if expected_crs is not None and src.crs != expected_crs:
        raise GeoMismatchError(
            f"{path} is in {src.crs} but {expected_crs} is expected (predict.expected_epsg); "
            "reproject the scene or change predict.expected_epsg"
        )


#: Reads the ``window`` square at ``(y, x)``: ``(data (C, window, window), h, w)``, where
#: ``h, w`` are the rows and columns inside the raster (the rest is padding).
WindowReader = Callable[[int, int, int], tuple[np.ndarray, int, int]]


def _pad_window(data: np.ndarray, window: int) -> np.ndarray:
    """Pad a clipped ``(C, h, w)`` window to ``(C, window, window)`` by reflection."""
    h, w = data.shape[-2:]
    if (h, w) == (window, window):
        return data
    pad = ((0, 0), (0, window - h), (0, window - w))
    return np.pad(data, pad, mode="reflect") if min(h, w) > 1 else np.pad(data, pad, "edge")


def _read_window(
    src: rasterio.io.DatasetReader, y: int, x: int, window: int
) -> tuple[np.ndarray, int, int]:
    """Read ``window`` square at ``(y, x)``; pad by reflection to full size when clipped.

    Raises:
        RasterError: the block cannot be read (a truncated or corrupt file).
    """
    h, w = min(window, src.height - y), min(window, src.width - x)
    try:
        data = src.read(window=Window(x, y, w, h))
    except rasterio.errors.RasterioError as err:
        raise RasterError(
            f"cannot read {src.name} (rows {y}-{y + h}, columns {x}-{x + w}): {err}. The file "
            "is truncated or corrupt: delete it and re-run the stage that wrote it (`make "
            "fetch` for a patch), then predict again"
        ) from err
    return _pad_window(data, window), h, w


def check_window(spec: WindowSpec, predictor: Predictor) -> None:
    """Raise :class:`ModelError` unless the window suits the network's downsampling."""
    factor = 2**predictor.meta.arch.encoder_depth
    if spec.window % factor:
        raise ModelError(
            f"predict.window {spec.window} is not a multiple of {factor} (2**encoder_depth of "
            f"the model); use e.g. {max(factor, spec.window // factor * factor)}"
        )


def blend_strips(
    read: WindowReader,
    shape: tuple[int, int],
    predictor: Predictor,
    spec: WindowSpec,
    nodata: float | None,
    needed: np.ndarray | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Blended sliding-window probabilities of a raster, one finished strip of rows at a time.

    Args:
        read: Reads one window (see :data:`WindowReader`).
        shape: ``(height, width)`` of the raster.
        predictor: The model.
        spec: Window settings (already fitted to the raster, see :func:`fit_window`).
        nodata: Input value marking a pixel as nodata when all bands hold it (None: none).
        needed: Optional ``(H, W)`` bool: windows holding no needed pixel are not predicted
            (their pixels stay NaN unless another window covers them). Every needed pixel
            gets exactly the value it gets without ``needed``.

    Yields:
        ``(top row, (n, width) float32)``: probabilities, NaN at nodata or uncovered pixels.

    Raises:
        ModelError: without ``needed``, a pixel left uncovered (cannot happen).
    """
    height, width = shape
    weights = blend_weights(spec.window, spec.blend)
    ys = window_offsets(height, spec.window, spec.overlap)
    xs = window_offsets(width, spec.window, spec.overlap)
    strip = min(spec.window, height)
    acc = np.zeros((strip, width), np.float64)
    wsum = np.zeros_like(acc)
    valid = np.zeros(acc.shape, bool)
    batch = max(1, predictor.batch_size)
    top = 0
    for i, y in enumerate(ys):
        row = [
            x
            for x in xs
            if needed is None or needed[y : y + spec.window, x : x + spec.window].any()
        ]
        for b in range(0, len(row), batch):
            cols = row[b : b + batch]
            reads = [read(y, x, spec.window) for x in cols]
            probs = predictor(np.stack([r[0] for r in reads]))
            for x, (data, h, w), prob in zip(cols, reads, probs, strict=True):
                rows = slice(y - top, y - top + h)
                acc[rows, x : x + w] += prob[:h, :w] * weights[:h, :w]
                wsum[rows, x : x + w] += weights[:h, :w]
                if nodata is None:
                    valid[rows, x : x + w] = True
                else:
                    valid[rows, x : x + w] = (data[:, :h, :w] != nodata).any(axis=0)
        done = ys[i + 1] if i + 1 < len(ys) else height
        n = done - top
        covered = wsum[:n] > 0
        if needed is None and not covered.all():  # cannot happen with positive weights
            raise ModelError("blend weights left pixels uncovered")
        out = np.full((n, width), np.nan, np.float32)
        np.divide(acc[:n], wsum[:n], out=out, where=covered & valid[:n], casting="unsafe")
        yield top, out
        for buf in (acc, wsum, valid):
            buf[: strip - n] = buf[n:].copy()
            buf[strip - n :] = 0
        top = done


def predict_array(
    dn: np.ndarray,
    predictor: Predictor,
    spec: WindowSpec,
    *,
    nodata: int = 0,
    needed: np.ndarray | None = None,
) -> np.ndarray:
    """Blended sliding-window probabilities of an in-memory raster (a map chunk).

    The same windows, blending and nodata rule as :func:`predict_raster`: a pixel gets the
    value it gets when the array is written to a file and predicted from there.

    Args:
        dn: ``(C, H, W)`` stored DN (uint16 reflectance x 10000) in the model's band order.
        predictor: The model.
        spec: Window settings.
        nodata: A pixel is nodata when every band holds it.
        needed: Optional ``(H, W)`` bool of the pixels whose values are wanted (see
            :func:`blend_strips`).

    Returns:
        ``(H, W)`` float32 probabilities, NaN at nodata (and unneeded, unpredicted) pixels.

    Raises:
        ModelError: a window the network cannot take.
    """
    check_window(spec, predictor)
    height, width = dn.shape[-2:]
    spec = fit_window(spec, height, width, 2**predictor.meta.arch.encoder_depth)

    def read(y: int, x: int, window: int) -> tuple[np.ndarray, int, int]:
        data = dn[:, y : y + window, x : x + window]
        return _pad_window(data, window), data.shape[1], data.shape[2]

    out = np.empty((height, width), np.float32)
    for top, strip in blend_strips(read, (height, width), predictor, spec, nodata, needed):
        out[top : top + len(strip)] = strip
    return out


def predict_raster(
    src_path: Path,
    dst_path: Path,
    predictor: Predictor,
    spec: WindowSpec,
    *,
    expected_crs: CRS | None = None,
    tags: Mapping[str, Any] | None = None,
) -> RasterPrediction:
    """Write the probability COG (float32, band ``probability``, nodata NaN) of one raster.

    The output has the input's CRS, transform and shape. Memory: one strip of
    ``spec.window`` rows x raster width (float64 accumulators) plus one batch of windows.

    Raises:
        ModelError: wrong band count/order, or a window the network cannot take.
        RasterError: the input is unreadable or not integer DN.
        GeoMismatchError: the CRS is missing or unexpected.
    """
    check_window(spec, predictor)
    try:
        src = rasterio.open(src_path)
    except rasterio.errors.RasterioError as err:
        raise RasterError(f"cannot open {src_path}: {err}; re-run the stage that wrote it") from err
    with src:
        check_input(src, predictor.meta, Path(src_path), expected_crs)
        grid = Grid(src.crs, src.transform, src.height, src.width)
        spec = fit_window(spec, src.height, src.width, 2**predictor.meta.arch.encoder_depth)
        windows = len(window_offsets(src.height, spec.window, spec.overlap)) * len(
            window_offsets(src.width, spec.window, spec.overlap)
        )
        nodata_pixels = 0

        def read(y: int, x: int, window: int) -> tuple[np.ndarray, int, int]:
            return _read_window(src, y, x, window)

        with streaming_cog(
            dst_path, grid, dtype="float32", band_name="probability", nodata=float("nan"), tags=tags
        ) as dst:
            strips = blend_strips(read, grid.shape, predictor, spec, src.nodata)
            for top, out in strips:
                nodata_pixels += int(np.isnan(out).sum())
                dst.write(out[None], window=Window(0, top, src.width, len(out)))
    return RasterPrediction(grid, windows, nodata_pixels, predictor.batch_size)


def threshold_raster(
    prob_path: Path, mask_path: Path, threshold: float, *, tags: Mapping[str, Any] | None = None
) -> int:
    """Write the uint8 ``mask`` COG (1 where probability >= ``threshold``; NaN -> 0) by blocks.

    The mask carries the farm palette and nodata of :data:`pipeline.geo.styles.MASK_ENCODING`.

    Returns:
        Number of positive pixels.
    """
    positives = 0
    with rasterio.open(prob_path) as src:
        grid = Grid(src.crs, src.transform, src.height, src.width)
        with streaming_cog(
            mask_path,
            grid,
            dtype="uint8",
            band_name="mask",
            nodata=MASK_NODATA,
            tags={**(tags or {}), "threshold": threshold},
            overview_resampling="nearest",
            encoding=MASK_ENCODING,
        ) as dst:
            for top in range(0, src.height, MASK_BLOCK_ROWS):
                n = min(MASK_BLOCK_ROWS, src.height - top)
                win = Window(0, top, src.width, n)
                prob = src.read(1, window=win)
                mask = np.nan_to_num(prob, nan=0.0) >= threshold
                positives += int(mask.sum())
                dst.write(mask.astype(np.uint8)[None], window=win)
    return positives
