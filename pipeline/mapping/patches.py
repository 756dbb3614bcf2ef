"""Composite patches around mapped farms, for the attribute and audit stages.

Each mapped farm gets a square patch on its zone's pixel lattice, centred on the farm: the
10-band composite, its SCL, the probability cut from the zone mosaic and the label mask
(``labels/farms.gpkg``, pixel-centre rule as in tiles). Every pixel takes its acquisition from
the map's provenance raster, read with fetch's reader on the patch grid, so the patch holds the
same composite the map predicted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from pipeline.bands import BANDS
from pipeline.geo.masks import rasterize_mask
from pipeline.geo.plan import snap
from pipeline.geo.raster import Grid, write_cog
from pipeline.geo.styles import write_patch_cogs
from pipeline.mapping.composite import compose, harmonized_scene, item_order, scene_scl
from pipeline.net import RetryPolicy
from pipeline.osm.geometry import to_epsg
from pipeline.stac.read import read_band


@dataclass(frozen=True)
class PatchItem:
    """One item of an acquisition, as a farm patch reads it."""

    item_id: str
    offset_dn: int
    hrefs: Mapping[str, str]


@dataclass(frozen=True)
class PatchJob:
    """One farm patch to cut.

    Attributes:
        farm_id: The mapped farm (also the patch id).
        grid: The patch grid (zone CRS, on the map's lattice).
        scenes: ``{acquisition index: its items}`` for the acquisitions of the zone.
        probability: The zone's probability mosaic.
        provenance: The zone's provenance mosaic.
        labels: Label farm geometries in the grid's CRS.
        out: ``{"image", "scl", "prob", "mask"}`` -> destination path.
    """

    farm_id: str
    grid: Grid
    scenes: Mapping[int, Sequence[PatchItem]]
    probability: str
    provenance: str
    labels: Sequence[BaseGeometry]
    out: Mapping[str, str]
    tags: Mapping[str, str] = field(default_factory=dict)


def patch_grid(geom: BaseGeometry, epsg: int, size: int, gsd: float) -> Grid:
    """A ``size`` x ``size`` grid on the ``gsd`` lattice of ``epsg``, centred on ``geom``
    (EPSG:4326)."""
    c = to_epsg(Point(geom.centroid.x, geom.centroid.y), epsg, max_segment_deg=0)
    half = size * gsd / 2
    x0, y0 = snap(c.x - half, gsd), snap(c.y + half, gsd, up=True)
    return Grid(CRS.from_epsg(epsg), Affine(gsd, 0.0, x0, 0.0, -gsd, y0), size, size)


def read_cut(path: str, grid: Grid, fill: float) -> np.ndarray:
    """The ``grid`` window of a mosaic on the same lattice (``fill`` outside it)."""
    with rasterio.open(path) as src:
        win = src.window(*grid.bounds)
        window = Window(round(win.col_off), round(win.row_off), grid.width, grid.height)
        return src.read(1, window=window, boundless=True, fill_value=fill)


def _scene(
    items: Sequence[PatchItem], grid: Grid, policy: RetryPolicy, gdal: Mapping[str, str | int]
) -> tuple[np.ndarray, np.ndarray]:
    def read(item: PatchItem, band: str) -> np.ndarray:
        return read_band(
            item.hrefs[band],
            grid,
            resampling=Resampling.nearest if band == "SCL" else Resampling.bilinear,
            dtype="uint8" if band == "SCL" else "uint16",
            policy=policy,
            options=gdal,
            what=f"read {band} of {item.item_id}",
        )

    scls = [read(item, "SCL") for item in items]
    order = item_order([it.item_id for it in items], scls)
    if not order:
        return np.zeros((len(BANDS), *grid.shape), np.uint16), np.zeros(grid.shape, np.uint8)
    raws = [np.stack([read(item, b) for b in BANDS]) for item in items]
    image = harmonized_scene(raws, [it.offset_dn for it in items], order)
    return image, scene_scl(scls, order, grid.shape)


def cut_farm_patch(
    job: PatchJob, policy: RetryPolicy, gdal: Mapping[str, str | int]
) -> dict[str, int]:
    """Write one farm's four patch files (a Dask task); returns pixel counts."""
    grid = job.grid
    provenance = read_cut(job.provenance, grid, 0).astype(np.int64)
    prob = read_cut(job.probability, grid, float("nan")).astype(np.float32)
    images, scls = {}, {}
    for index in sorted(int(v) for v in np.unique(provenance) if v):
        images[index], scls[index] = _scene(job.scenes[index], grid, policy, gdal)
    image = (
        compose(provenance, images) if images else np.zeros((len(BANDS), *grid.shape), np.uint16)
    )
    scl = compose(provenance, scls) if scls else np.zeros(grid.shape, np.uint8)
    mask = rasterize_mask(list(job.labels), grid)
    tags = {**job.tags, "farm_id": job.farm_id}
    write_patch_cogs(job.out["image"], job.out["scl"], image, scl, grid, tags)
    write_cog(
        job.out["prob"],
        prob[None],
        grid,
        band_names=["probability"],
        nodata=float("nan"),
        tags=tags,
    )
    write_cog(
        job.out["mask"],
        mask[None],
        grid,
        band_names=["farm"],
        tags=tags,
        overview_resampling="nearest",
    )
    return {"mapped_pixels": int((provenance > 0).sum()), "label_pixels": int(mask.sum())}
