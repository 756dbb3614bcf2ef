"""Fixtures of the map tests: the test worlds (written once) and real local Dask clusters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import box
from support.mapping import (
    EPSG,
    FARMS,
    HEIGHT,
    WIDTH,
    X0,
    Y0,
    SceneDef,
    World,
    main_scenes,
    write_catalog,
)

from pipeline.compute import open_client
from pipeline.config.compute import ComputeConfig
from pipeline.geo.masks import grid_footprint_lonlat
from pipeline.osm.geometry import to_epsg


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One tile, two acquisitions (clouds in different places), three planted farms."""
    root = tmp_path_factory.mktemp("map-world")
    scenes = main_scenes()
    catalog = write_catalog(root / "stac", scenes)
    area = grid_footprint_lonlat(scenes[0].grid(10))
    return World(root, catalog, area, dict(FARMS))


def _zone_scene(epsg: int, farm_lonlat: Any) -> SceneDef:
    """A 20 m-aligned item of zone ``epsg`` around lon -78 (reaching into the other zone)."""
    outline = to_epsg(box(-78.05, 37.98, -77.95, 38.05), epsg)
    minx, miny, maxx, maxy = outline.bounds
    x0, y0 = minx // 20 * 20, -(-maxy // 20) * 20
    width = int(-(-(maxx - x0) // 20)) * 2
    height = int(-(-(y0 - miny) // 20)) * 2
    return SceneDef(
        f"S2A_{epsg}_20230712",
        "2023-07-12T10:00:00Z",
        epsg,
        x0,
        y0,
        width,
        height,
        datatake="Z",
        farms=[to_epsg(farm_lonlat, epsg)],
        smooth=False,
    )


@pytest.fixture(scope="session")
def zone_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Two items of one datatake, in UTM 17N and 18N, with a farm across the 78 W meridian."""
    root = tmp_path_factory.mktemp("map-zones")
    farm = box(-78.004, 38.010, -77.996, 38.016)
    catalog = write_catalog(root / "stac", [_zone_scene(e, farm) for e in (32617, 32618)])
    area = box(-78.03, 37.99, -77.97, 38.04)
    return World(root, catalog, area, {"across": farm}, epsg=4326)


@pytest.fixture(scope="module")
def client2() -> Iterator[Any]:
    """A real local cluster: two worker processes of one thread."""
    with open_client(ComputeConfig(workers=2, threads_per_worker=1)) as client:
        yield client


@pytest.fixture(scope="module")
def client1() -> Iterator[Any]:
    """A real local cluster: one worker process of one thread."""
    with open_client(ComputeConfig(workers=1, threads_per_worker=1)) as client:
        yield client


__all__ = ["EPSG", "HEIGHT", "WIDTH", "X0", "Y0", "Path"]
