"""Per-zone mosaics of the chunk files: one probability COG and one provenance COG per zone.

Written by windows, one chunk at a time, into a tiled temporary GeoTIFF that becomes a COG
(with overviews) atomically: memory stays at one chunk whatever the area. Cells of the zone's
grid without a finished chunk (gaps, chunks outside the area) are nodata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from pipeline.mapping.grid import Chunk, zone_grid
from pipeline.model.window import streaming_cog


def _window(chunk: Chunk, origin: tuple[float, float]) -> Window:
    x0, y0 = origin
    core = chunk.core
    col = round((core.transform.c - x0) / chunk.gsd)
    row = round((y0 - core.transform.f) / chunk.gsd)
    return Window(col, row, chunk.chunk_px, chunk.chunk_px)


def write_zone_mosaic(
    chunks: Sequence[Chunk],
    files: Mapping[str, Path],
    dst: Path,
    *,
    dtype: str,
    band_name: str,
    nodata: float,
    tags: Mapping[str, Any],
) -> Path:
    """Mosaic the chunk cores of one zone into the COG ``dst``.

    Args:
        chunks: Every chunk of the zone (their cores tile the zone grid).
        files: ``{chunk_id: file}`` of the finished chunks (others are written as nodata).
        dst: Output COG.
        dtype: Output dtype (the chunk files').
        band_name: Band description.
        nodata: Nodata value (NaN for probability, 0 for provenance).
        tags: Dataset tags.
    """
    grid = zone_grid(list(chunks))
    origin = (grid.transform.c, grid.transform.f)
    empty = np.full((1, chunks[0].chunk_px, chunks[0].chunk_px), nodata, dtype)
    resampling = "nearest" if np.dtype(dtype).kind in "ui" else None
    with streaming_cog(
        dst,
        grid,
        dtype=dtype,
        band_name=band_name,
        nodata=nodata,
        tags=tags,
        overview_resampling=resampling,
    ) as out:
        for row in range(0, grid.height, chunks[0].chunk_px):  # cells outside the area
            for col in range(0, grid.width, chunks[0].chunk_px):
                out.write(empty, window=Window(col, row, empty.shape[2], empty.shape[1]))
        for chunk in chunks:
            path = files.get(chunk.chunk_id)
            if path is None:
                continue
            with rasterio.open(path) as src:
                out.write(src.read(1)[None].astype(dtype), window=_window(chunk, origin))
    return dst
