"""Split assignment and the tiles tables, on hand-made patches (no rasters)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from pipeline.bands import BANDS
from pipeline.geo.masks import BandMoments
from pipeline.geo.splits import SplitAssignment, assign_splits, block_id, block_split
from pipeline.geo.tiling import (
    TILES_COLUMNS,
    PatchResult,
    TileFiles,
    band_stats,
    farms_in_several_splits,
    skipped_by_reason,
    summary_per_split,
    tiles_table,
)

FRACTIONS = (0.6, 0.2, 0.2)


@dataclass(frozen=True)
class Spot:
    epsg: int
    centre: tuple[float, float]
    footprint: BaseGeometry
    farm_ids: tuple[str, ...] = ()


def spots() -> list[Spot]:
    """Two patches sharing farm w1 in blocks far apart, an overlapping pair, a loner."""
    return [
        Spot(32633, (1_000.0, 1_000.0), box(0, 0, 1, 1), ("w1",)),
        Spot(32633, (90_000.0, 1_000.0), box(5, 5, 6, 6), ("w1",)),
        Spot(32633, (50_000.0, 50_000.0), box(10, 10, 12, 12)),
        Spot(32633, (70_000.0, 70_000.0), box(11, 11, 13, 13)),  # overlaps the previous one
        Spot(32634, (1_000.0, 1_000.0), box(20, 20, 21, 21)),
    ]


def test_groups_share_their_first_members_block_split() -> None:
    patches = spots()
    got = assign_splits(patches, 2560.0, FRACTIONS, seed=3)
    assert isinstance(got, SplitAssignment)
    assert got.groups == [0, 0, 2, 2, 4]
    assert got.blocks == [block_id(p.epsg, *p.centre, 2560.0) for p in patches]
    assert got.blocks[0] != got.blocks[1] and got.blocks[0] != got.blocks[4]  # zone in the name
    expected = [block_split(got.blocks[g], FRACTIONS, 3) for g in got.groups]
    assert got.splits == expected
    assert got.splits[0] == got.splits[1] and got.splits[2] == got.splits[3]


def test_split_assignment_is_seeded_and_order_stable() -> None:
    patches = spots() * 8  # 40 patches: duplicates overlap their twins
    first = assign_splits(patches, 1000.0, FRACTIONS, seed=0)
    assert assign_splits(patches, 1000.0, FRACTIONS, seed=0) == first
    many = [Spot(32633, (k * 5000.0, 0.0), box(3 * k, 0, 3 * k + 1, 1)) for k in range(200)]
    a = assign_splits(many, 1000.0, FRACTIONS, seed=0).splits
    b = assign_splits(many, 1000.0, FRACTIONS, seed=1).splits
    assert a != b
    shares = pd.Series(a).value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.6, abs=0.1)


def result(pid: str, farm_ids: tuple[str, ...], pixels: int, value: float) -> PatchResult:
    image = np.full((len(BANDS), 4, 4), value, dtype=np.uint16)
    return PatchResult(
        pid,
        32633,
        (0.0, 0.0),
        box(0, 0, 1, 1),
        farm_ids,
        pixels,
        pixels / 16,
        BandMoments.of(image),
    )


def test_tiles_table_and_its_summaries() -> None:
    results = [
        result("p0", ("w1",), 4, 100),
        result("p1", ("w1", "w2"), 8, 300),
        result("p2", (), 0, 1000),
    ]
    assignment = SplitAssignment(["b0", "b0", "b1"], ["train", "val", "train"], [0, 0, 2])
    files = [
        TileFiles(f"fetch/patches/{r.patch_id}.tif", "s", f"m{k}") for k, r in enumerate(results)
    ]
    table = tiles_table(results, assignment, {"p0": "positive"}, files)
    assert tuple(c for c in table.columns if c != "geometry") == TILES_COLUMNS
    assert list(table["group"]) == ["p0", "p0", "p2"]
    assert list(table["kind"]) == ["positive", "unknown", "unknown"]
    assert json.loads(table["farm_ids"].iloc[1]) == ["w1", "w2"] and table.crs.to_epsg() == 4326
    per_split = summary_per_split(table)
    assert per_split["train"] == {"patches": 2, "positives": 1, "farms": 1, "farm_pixels": 4}
    assert per_split["test"] == {"patches": 0, "positives": 0, "farms": 0, "farm_pixels": 0}
    assert farms_in_several_splits(table) == 1  # w1 in train and val

    stats = band_stats(results, assignment.splits)
    assert stats["scope"] == "train" and stats["n_patches"] == 2
    assert stats["mean"] == pytest.approx([550.0] * len(BANDS))
    assert stats["std"] == pytest.approx([450.0] * len(BANDS))
    everything = band_stats(results, ["val", "val", "test"])
    assert everything["n_patches"] == 3 and everything["scope"].startswith("all")


def test_skipped_by_reason_counts_statuses_with_reasons() -> None:
    index = pd.DataFrame(
        {
            "status": ["ok", "skipped", "skipped", "failed"],
            "reason": ["", "cloudy", "cloudy", "HTTPError: 503"],
        }
    )
    assert skipped_by_reason(index) == {"skipped: cloudy": 2, "failed: HTTPError: 503": 1}
    assert skipped_by_reason(index.drop(columns="reason")) == {"skipped: ": 2, "failed: ": 1}
