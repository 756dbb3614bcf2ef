"""The chunk grid, the composite rule and the config of the map: pure functions, no cluster."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from shapely.geometry import box

from pipeline.config import load_config
from pipeline.config.compute import ComputeConfig
from pipeline.errors import ConfigError
from pipeline.mapping.composite import NONE, choose, compose, rank
from pipeline.mapping.grid import plan_chunks, split_zones, zone_grid
from pipeline.stages import STAGES


def test_chunks_sit_on_a_fixed_grid_per_zone_and_never_straddle_zones() -> None:
    area = box(-78.03, 37.99, -77.97, 38.04)  # across the 78 W meridian
    zones = split_zones(area)
    assert [z.epsg for z in zones] == [32617, 32618]
    chunks = plan_chunks(area, 256, 32, 10.0)
    assert {c.epsg for c in chunks} == {32617, 32618}
    for c in chunks:
        zone = next(z for z in zones if z.epsg == c.epsg)
        assert zone.piece.buffer(1e-6).contains(c.piece)
        left, bottom, right, top = c.core.bounds
        assert (left, bottom) == (c.col * 2560.0, c.row * 2560.0)
        assert c.chunk_id == f"{c.epsg}_{c.row}_{c.col}"
        assert c.read.shape == (256 + 64, 256 + 64)
        assert c.read.bounds == (left - 320, bottom - 320, right + 320, top + 320)
    # a smaller area gives the same cells where it overlaps: the grid does not move
    inner = plan_chunks(box(-78.02, 38.0, -78.01, 38.01), 256, 32, 10.0)
    assert {c.chunk_id for c in inner} <= {c.chunk_id for c in chunks}
    grid = zone_grid([c for c in chunks if c.epsg == 32618])
    assert grid.height % 256 == 0 and grid.width % 256 == 0


def test_composite_takes_each_pixel_from_the_first_clear_acquisition() -> None:
    a = np.array([[True, False], [False, False]])
    b = np.array([[True, True], [False, False]])
    c = np.array([[True, True], [True, False]])
    choice = choose([a, b, c])
    assert choice.tolist() == [[0, 1], [2, NONE]]
    layers = {0: np.full((1, 2, 2), 10), 1: np.full((1, 2, 2), 20), 2: np.full((1, 2, 2), 30)}
    assert compose(choice, layers).tolist() == [[[10, 20], [30, 0]]]


def test_rank_clearest_first_then_nearest_target_then_id() -> None:
    whens = [datetime(2023, 7, d, tzinfo=UTC) for d in (2, 12, 22)]
    assert rank([0.5, 0.9, 0.7], whens, ["a", "b", "c"], target=None, tie=0.01) == [1, 2, 0]
    # a tie in clear share goes to the acquisition nearest the target date
    got = rank([0.9, 0.9, 0.2], whens, ["a", "b", "c"], target=whens[0].date(), tie=0.01)
    assert got == [0, 1, 2]


def test_config_sections_and_halo_rule() -> None:
    cfg = load_config("configs/demo.yaml")
    assert (cfg.map.chunk_px, cfg.map.halo_px, cfg.compute.workers) == (512, 64, 2)
    assert "compute" not in STAGES["map"].sections
    with pytest.raises(ConfigError, match=r"map\.halo_px 16 .*predict\.overlap 64"):
        load_config("configs/demo.yaml", ["map.halo_px=16"])
    with pytest.raises(ConfigError, match=r"multiple of 32"):
        load_config("configs/demo.yaml", ["map.chunk_px=500"])
    assert ComputeConfig().scheduler is None
