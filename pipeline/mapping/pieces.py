"""Polygon pieces of one chunk's core: what the farms are merged from.

A piece is a 4-connected component of the chunk's thresholded probability, as a polygon in the
zone's CRS (pixel edges, holes kept), with the sums needed to merge statistics exactly across
chunks: pixel count, probability sum and maximum, and the acquisitions under it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from shapely.geometry.base import BaseGeometry

from pipeline.mapping.grid import Chunk
from pipeline.model.evaluate import components
from pipeline.model.polygons import labels_to_polygons


@dataclass(frozen=True)
class Piece:
    """One component of one chunk.

    Attributes:
        epsg: The zone.
        chunk_id: The chunk.
        geometry: Polygon in the zone's CRS.
        pixels: Pixel count.
        prob_sum: Sum of its probabilities.
        prob_max: Largest probability.
        acquisitions: Acquisition indices of its pixels.
    """

    epsg: int
    chunk_id: str
    geometry: BaseGeometry
    pixels: int
    prob_sum: float
    prob_max: float
    acquisitions: tuple[int, ...]


def chunk_pieces(
    prob: np.ndarray, provenance: np.ndarray, chunk: Chunk, threshold: float
) -> list[Piece]:
    """The pieces of a chunk core's ``prob >= threshold`` (NaN is never a farm).

    Args:
        prob: ``(chunk_px, chunk_px)`` float32 on ``chunk.core``.
        provenance: Acquisition index per pixel, same grid.
        chunk: The chunk.
        threshold: Probability threshold.
    """
    labels, n = components(np.nan_to_num(prob, nan=0.0) >= threshold)
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    frame = labels_to_polygons(labels, chunk.core, patch_id=chunk.chunk_id)
    values = np.nan_to_num(prob, nan=0.0).astype(np.float64)
    sums = np.asarray(ndimage.sum(values, labels, index), np.float64)
    maxima = np.asarray(ndimage.maximum(values, labels, index), np.float64)
    inside = labels > 0
    pairs = np.unique(np.stack([labels[inside], provenance[inside].astype(np.int64)]), axis=1)
    acqs: dict[int, list[int]] = {}
    for label, acq in pairs.T.tolist():
        if acq:
            acqs.setdefault(label, []).append(acq)
    return [
        Piece(
            chunk.epsg,
            chunk.chunk_id,
            frame.geometry.iloc[k - 1],
            int(frame["pixels"].iloc[k - 1]),
            float(sums[k - 1]),
            float(maxima[k - 1]),
            tuple(acqs.get(k, [])),
        )
        for k in index.tolist()
    ]
