"""Reads by source block give exactly the pixels fetch's reader gives on the same grid."""

from __future__ import annotations

import numpy as np
import pytest
from support.mapping import World

from pipeline.bands import BANDS
from pipeline.mapping.grid import plan_chunks
from pipeline.mapping.reads import (
    Asset,
    open_info,
    plan_window,
    read_block,
    resample_window,
    resampling_for,
)
from pipeline.net import RetryPolicy
from pipeline.stac.assets import asset_href
from pipeline.stac.read import read_band
from pipeline.stac.source import ItemQuery, StaticCatalogSource


@pytest.mark.parametrize("band", ["B04", "B11", "SCL"])
def test_block_reads_equal_the_fetch_reader(world: World, band: str) -> None:
    items = StaticCatalogSource(str(world.catalog)).search(
        ItemQuery(world.area, "sentinel-2-l2a", None, 100, 10)
    )
    item = items[0]
    policy = RetryPolicy(0, 0.01)
    info = open_info(Asset(item.id, band, asset_href(item, band)), policy, {})
    dtype = "uint8" if band == "SCL" else "uint16"
    chunks = plan_chunks(world.area, 256, 32, 10.0)
    assert len(chunks) == 12
    for chunk in chunks[::3]:  # edge and inner chunks; read grids reach past the scene
        sw = plan_window(info, chunk.read)
        assert sw is not None and len(sw.blocks) >= 1
        blocks = [read_block(info, b, policy, {}) for b in sw.blocks]
        got = resample_window(sw, blocks, chunk.read, resampling_for(band), dtype)
        expected = read_band(
            info.asset.href,
            chunk.read,
            resampling=resampling_for(band),
            dtype=dtype,
            policy=policy,
            options={},
            what=band,
        )
        np.testing.assert_array_equal(got, expected)
        assert (got > 0).any()
    assert band in (*BANDS, "SCL")
