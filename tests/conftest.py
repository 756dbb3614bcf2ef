"""Shared fixtures: tiny real GeoTIFFs built in code, and a fixed seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from pipeline.bands import BANDS
from pipeline.geo.raster import Grid, write_cog


@pytest.fixture
def utm_grid() -> Grid:
    """A 64 x 64 grid at 10 m in UTM 18N (the demo scene's CRS)."""
    return Grid(CRS.from_epsg(32618), Affine(10.0, 0.0, 440_000.0, 0.0, -10.0, 4_170_000.0), 64, 64)


@pytest.fixture
def make_patch(tmp_path: Path, utm_grid: Grid):
    """Write a 10-band uint16 patch COG with seeded random reflectance; returns its path."""

    def _make(name: str = "p0", seed: int = 0, grid: Grid | None = None) -> Path:
        g = grid or utm_grid
        rng = np.random.default_rng(seed)
        array = rng.integers(200, 4000, size=(len(BANDS), *g.shape), dtype=np.uint16)
        return write_cog(tmp_path / f"{name}.tif", array, g, band_names=BANDS, nodata=0)

    return _make
