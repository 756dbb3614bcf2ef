"""A retraining's inputs from an earlier run's triage: hard negatives in the patch plan.

The earlier run's ``triage/review.gpkg`` is written by the real triage stage on the small
label-error world; the labels stage then plans a new run with ``labels.hard_negatives``.
"""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import geopandas as gpd
import pytest
from shapely.geometry.base import BaseGeometry
from support.triage import fresh_run, write_map, write_map_rasters
from support.world import label_error_config

from pipeline.config import RunConfig
from pipeline.config.feedback import HardNegativesConfig
from pipeline.geo.splits import assign_splits
from pipeline.paths import RunPaths
from pipeline.stages import run_stage
from pipeline.triage.feedback import (
    hard_negative_objects,
    hard_negative_reason,
    ignore_regions,
    read_review,
)

PLAN_KEYS = ["patch_id", "epsg", "x0", "y0", "kind", "hard"]


@pytest.fixture(scope="module")
def earlier_review(triage_world):
    """The review file of an earlier run (map from the planted truth, real triage stage)."""
    cfg, paths = fresh_run(triage_world, "earlier")
    write_map(paths, triage_world.truth)
    write_map_rasters(paths, triage_world.truth)
    run_stage("triage", cfg)
    return paths.triage_review


def _plan(triage_world, name: str, *extra: str) -> tuple[gpd.GeoDataFrame, dict, RunConfig]:
    root = triage_world.cfg.run.data_root
    cfg = label_error_config(
        root,
        f"run.name={name}",
        "labels.negative_buffer_m=50",
        "labels.patch_size=64",  # 640 m patches in 1280 m blocks: room beside the positives
        "tiles.block_size_m=1280",
        *extra,
    )
    summary = run_stage("labels", cfg, force=True).summary
    plan = gpd.read_file(RunPaths(root, name).plan, layer="plan")
    return plan, summary, cfg


def test_hard_negatives_join_the_plan_last_and_only_in_training_blocks(
    triage_world, earlier_review
) -> None:
    plain, _, _ = _plan(triage_world, "plain")
    hard = [f"labels.hard_negatives.review={earlier_review}", "labels.hard_negatives.max_score=1"]
    plan, summary, cfg = _plan(triage_world, "hard-train", *hard)
    _, summary_all, _ = _plan(
        triage_world, "hard-all", *hard, "labels.hard_negatives.splits=[train,val,test]"
    )
    hc = cfg.labels.hard_negatives
    assert hc is not None
    # split settings follow tiles (derived), so the plan's blocks are the tiles stage's blocks
    assert hc.split_fractions == cfg.tiles.split_fractions
    assert hc.split_seed == cfg.split_seed and hc.block_size_m == cfg.tiles.block_size_m
    # every earlier patch is planned as before, with the same id: val and test stay as they were
    n = len(plain)
    assert plan[PLAN_KEYS].head(n).equals(plain[PLAN_KEYS])
    added = plan.iloc[n:]
    counts, info = summary["plan"], summary["hard_negatives_from_map"]
    assert len(added) == counts["map_hard_negatives"]
    assert added["kind"].eq("negative").all() and added["hard"].all()
    objects = hard_negative_objects(read_review(earlier_review, "x"), hc)
    assert info["objects"] == len(objects) > 0
    refused = sum(v for k, v in counts.items() if k.startswith("map_hard_negatives_refused_"))
    assert len(added) + refused == len(objects)
    assert len(added) > 0
    # the tiles stage's own split assignment: earlier patches keep their splits, the added ones
    # are all in training groups
    before, after = _splits(plain, cfg), _splits(plan, cfg)
    assert after[:n] == before
    assert set(after[n:]) == {"train"}
    # allowing every split plans at least as many, none refused for its split
    assert summary_all["plan"]["map_hard_negatives"] >= len(added)
    assert summary_all["plan"]["map_hard_negatives_refused_split"] == 0


class _Placed(NamedTuple):
    epsg: int
    centre: tuple[float, float]
    footprint: BaseGeometry
    farm_ids: tuple[str, ...]


def _splits(plan: gpd.GeoDataFrame, cfg: RunConfig) -> list[str]:
    """Splits of the plan's patches as the tiles stage assigns them (plan farms, centres)."""
    half = cfg.labels.patch_size * cfg.labels.gsd / 2
    placed = [
        _Placed(int(r.epsg), (r.x0 + half, r.y0 - half), r.geometry, tuple(json.loads(r.farm_ids)))
        for r in plan.itertuples()
    ]
    tc = cfg.tiles
    return list(assign_splits(placed, tc.block_size_m, tc.split_fractions, cfg.split_seed).splits)


def test_ignore_regions_and_hard_negatives_split_the_candidates(earlier_review) -> None:
    from pipeline.config.feedback import IgnoreLabelsConfig

    review = read_review(earlier_review, "x")
    ignore = ignore_regions(review, IgnoreLabelsConfig(review=earlier_review))
    hard = hard_negative_objects(review, HardNegativesConfig(review=earlier_review))
    ignored = {i.removeprefix("candidate:") for i in ignore["farm_id"] if i.startswith("cand")}
    assert ignored and not ignored & set(hard["object_id"])
    assert set(ignore.loc[ignore["kind"] == "suspect", "farm_id"]) == set(
        review.suspects["farm_id"]
    )
    assert len(ignored) + len(hard) == len(review.candidates)
    assert hard["score"].is_monotonic_increasing


def test_hard_negative_reasons() -> None:
    cfg = HardNegativesConfig(review="r.gpkg", max_score=0.1, max_focus=0.3)
    assert hard_negative_reason(0.5, 0.9, "snow", cfg) == "confirmed cue snow"
    assert hard_negative_reason(0.5, 0.2, "", cfg) == "focus 0.20"
    assert hard_negative_reason(0.05, math.nan, "", cfg) == "score 0.050"
    assert hard_negative_reason(0.5, math.nan, "", cfg) == ""
    off = HardNegativesConfig(review="r.gpkg", confirmed_cue=False)
    assert hard_negative_reason(0.5, 0.9, "snow", off) == ""
