"""Object targets: polygons (farms, false positives, missed farms, analyst polygons) rasterized
onto a patch grid, and the attribution mass inside, around and outside each of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from shapely.geometry.base import BaseGeometry

from pipeline.attribution.targets import Target
from pipeline.errors import AttributionError
from pipeline.geo.masks import polygon_mask
from pipeline.geo.raster import Grid


def polygon_target(name: str, target_id: str, geometry: BaseGeometry, grid: Grid) -> Target:
    """A sum-of-logits target over ``geometry`` (in ``grid``'s CRS) on the patch grid.

    Raises:
        AttributionError: the polygon does not cover any pixel of the patch.
    """
    mask = polygon_mask(geometry, grid)
    if not mask.any():
        raise AttributionError(
            f"{name} {target_id!r} lies outside the patch (bounds {grid.bounds} in "
            f"{grid.crs}): no pixel to explain. Check the polygon's CRS or patch assignment"
        )
    return Target(name, str(target_id), torch.from_numpy(mask))


def ring_mask(geometry: BaseGeometry, grid: Grid, buffer_m: float) -> np.ndarray:
    """Pixels within ``buffer_m`` metres of ``geometry`` but outside it (grid CRS in metres)."""
    inside = polygon_mask(geometry, grid)
    if buffer_m <= 0:
        return np.zeros(grid.shape, dtype=bool)
    return polygon_mask(geometry.buffer(buffer_m), grid) & ~inside


@dataclass(frozen=True)
class RegionMass:
    """Attribution mass (sum of the aggregate map) in three regions, and absolute shares.

    Attributes:
        inside, ring, outside: Signed sums of the aggregate map over each region.
        share_inside, share_ring, share_outside: Shares of the total absolute mass.
        top_bands: Bands ordered by ``|sum of the band's values inside|`` (largest first).
    """

    inside: float
    ring: float
    outside: float
    share_inside: float
    share_ring: float
    share_outside: float
    top_bands: tuple[str, ...]


def region_mass(
    values: np.ndarray,
    aggregate: np.ndarray,
    inside: np.ndarray,
    ring: np.ndarray,
    bands: tuple[str, ...],
    top: int = 3,
) -> RegionMass:
    """Mass of ``aggregate`` ``(H, W)`` inside / in the ring / outside; top bands of ``values``
    ``(C, H, W)`` inside the object.

    Raises:
        AttributionError: ``inside`` is empty.
    """
    if not inside.any():
        raise AttributionError("region_mass: the object's mask is empty; nothing to measure")
    outside = ~(inside | ring)
    sums = [float(aggregate[m].sum()) for m in (inside, ring, outside)]
    absolute = np.array([float(np.abs(aggregate[m]).sum()) for m in (inside, ring, outside)])
    shares = absolute / max(absolute.sum(), 1e-30)
    per_band = np.abs(values[:, inside].sum(axis=1))
    order = np.argsort(-per_band, kind="stable")[:top]
    return RegionMass(
        inside=sums[0],
        ring=sums[1],
        outside=sums[2],
        share_inside=float(shares[0]),
        share_ring=float(shares[1]),
        share_outside=float(shares[2]),
        top_bands=tuple(bands[i] for i in order),
    )
