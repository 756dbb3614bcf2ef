"""The area to map, split by UTM zone and cut into chunks of a fixed grid per zone.

A zone is a 6-degree strip and a hemisphere (EPSG 326zz north, 327zz south; the Norway and
Svalbard exceptions are ignored, as everywhere in the project). In each zone, chunks are the
cells of a grid anchored at multiples of ``chunk_px * gsd`` metres of the zone's CRS: cell
``(row, col)`` covers ``x`` in ``[col, col + 1) * E`` and ``y`` in ``[row, row + 1) * E``
(``E = chunk_px * gsd``), so the same ground always falls in the same chunk, whatever the area.
A chunk id is ``<epsg>_<row>_<col>``. A chunk never straddles zones: its pixels outside its
zone's piece of the area are left unmapped, and the neighbouring zone maps them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from pipeline.geo.masks import grid_footprint_lonlat, rasterize_mask
from pipeline.geo.raster import Grid
from pipeline.osm.geometry import to_epsg

#: Zone strips are 6 degrees of longitude wide.
ZONE_WIDTH_DEG = 6.0


@dataclass(frozen=True)
class Zone:
    """One UTM zone's piece of the area.

    Attributes:
        epsg: EPSG code of the zone (326zz / 327zz).
        lonlat: The piece in EPSG:4326.
        piece: The piece in the zone's CRS (metres).
    """

    epsg: int
    lonlat: BaseGeometry
    piece: BaseGeometry


@dataclass(frozen=True)
class Chunk:
    """One cell of a zone's chunk grid.

    Attributes:
        epsg: The zone.
        row: Northing cell index (``y`` in ``[row, row + 1) * extent``).
        col: Easting cell index.
        chunk_px: Core side in pixels.
        halo_px: Pixels read and predicted around the core.
        gsd: Pixel size in metres.
        piece: The zone's piece of the area inside the core, in the zone's CRS.
    """

    epsg: int
    row: int
    col: int
    chunk_px: int
    halo_px: int
    gsd: float
    piece: BaseGeometry

    @property
    def chunk_id(self) -> str:
        return f"{self.epsg}_{self.row}_{self.col}"

    @property
    def extent(self) -> float:
        """Core side in metres."""
        return self.chunk_px * self.gsd

    @property
    def core(self) -> Grid:
        """The core grid (what the chunk's outputs cover)."""
        e = self.extent
        transform = Affine(self.gsd, 0.0, self.col * e, 0.0, -self.gsd, (self.row + 1) * e)
        return Grid(CRS.from_epsg(self.epsg), transform, self.chunk_px, self.chunk_px)

    @property
    def read(self) -> Grid:
        """The core plus ``halo_px`` on every side (what is read and predicted)."""
        core, h = self.core, self.halo_px
        transform = core.transform @ Affine.translation(-h, -h)
        return Grid(core.crs, transform, self.chunk_px + 2 * h, self.chunk_px + 2 * h)

    @property
    def footprint(self) -> BaseGeometry:
        """The core's outline in EPSG:4326."""
        return grid_footprint_lonlat(self.core)

    @property
    def read_footprint(self) -> BaseGeometry:
        """The read grid's outline in EPSG:4326."""
        return grid_footprint_lonlat(self.read)

    def area_mask(self) -> np.ndarray:
        """``(chunk_px, chunk_px)`` bool: core pixels whose centre lies in the zone piece."""
        return rasterize_mask([self.piece], self.core) > 0


def zone_epsgs(area: BaseGeometry) -> list[int]:
    """EPSG codes of every UTM zone the (EPSG:4326) area reaches, ascending."""
    minx, miny, maxx, maxy = area.bounds
    first = max(1, math.floor((minx + 180.0) / ZONE_WIDTH_DEG) + 1)
    last = min(60, math.floor((maxx + 180.0) / ZONE_WIDTH_DEG - 1e-12) + 1)
    hemispheres = ([32600] if maxy >= 0 else []) + ([32700] if miny < 0 else [])
    return sorted(h + z for h in hemispheres for z in range(first, last + 1))


def zone_box(epsg: int) -> BaseGeometry:
    """The zone's strip in EPSG:4326 (one hemisphere)."""
    zone = epsg % 100
    west = -180.0 + (zone - 1) * ZONE_WIDTH_DEG
    south, north = (0.0, 90.0) if epsg < 32700 else (-90.0, 0.0)
    return box(west, south, west + ZONE_WIDTH_DEG, north)


def split_zones(area: BaseGeometry) -> list[Zone]:
    """The area's pieces, one per UTM zone it reaches (pieces without area are dropped)."""
    zones = []
    for epsg in zone_epsgs(area):
        lonlat = shapely.intersection(area, zone_box(epsg))
        if lonlat.is_empty or lonlat.area <= 0:
            continue
        zones.append(Zone(epsg, lonlat, to_epsg(lonlat, epsg)))
    return zones


def zone_chunks(zone: Zone, chunk_px: int, halo_px: int, gsd: float) -> list[Chunk]:
    """The chunks of ``zone`` whose core meets its piece, north to south, west to east."""
    e = chunk_px * gsd
    minx, miny, maxx, maxy = zone.piece.bounds
    cols = range(math.floor(minx / e), math.ceil(maxx / e))
    rows = range(math.ceil(maxy / e) - 1, math.floor(miny / e) - 1, -1)
    shapely.prepare(zone.piece)
    chunks = []
    for row in rows:
        for col in cols:
            cell = box(col * e, row * e, (col + 1) * e, (row + 1) * e)
            if not zone.piece.intersects(cell):
                continue
            piece = shapely.intersection(zone.piece, cell)
            if piece.area > 0:
                chunks.append(Chunk(zone.epsg, row, col, chunk_px, halo_px, gsd, piece))
    return chunks


def plan_chunks(area: BaseGeometry, chunk_px: int, halo_px: int, gsd: float) -> list[Chunk]:
    """Every chunk of the area, zone by zone (see the module docstring)."""
    return [c for z in split_zones(area) for c in zone_chunks(z, chunk_px, halo_px, gsd)]


def zone_grid(chunks: list[Chunk]) -> Grid:
    """The grid spanning the cores of ``chunks`` (all of one zone): the zone mosaic's grid."""
    first = chunks[0]
    e = first.extent
    rows = [c.row for c in chunks]
    cols = [c.col for c in chunks]
    transform = Affine(first.gsd, 0.0, min(cols) * e, 0.0, -first.gsd, (max(rows) + 1) * e)
    n_rows, n_cols = max(rows) - min(rows) + 1, max(cols) - min(cols) + 1
    return Grid(first.core.crs, transform, n_rows * first.chunk_px, n_cols * first.chunk_px)
