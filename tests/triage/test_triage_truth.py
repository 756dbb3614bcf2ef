"""The triage scored against the planted truth of a small label-error world."""

from __future__ import annotations

import geopandas as gpd
from support.triage import write_map

from pipeline.stages import run_stage
from pipeline.triage.truth import score_triage


def test_triage_finds_the_planted_label_errors(triage_world) -> None:
    w = triage_world
    write_map(w.paths, w.truth)
    manifest = run_stage("triage", w.cfg, force=True)
    cands = gpd.read_file(w.paths.triage_review, layer="candidates")
    sus = gpd.read_file(w.paths.triage_review, layer="suspects")
    score = score_triage(cands, sus, w.truth.farms, w.truth.ghosts)
    assert score.k == 2 and score.top_k_share >= 0.8
    assert score.ghosts == 2 and score.ghosts_listed == 2
    assert score.removed_listed == score.removed == 1  # the removed farm, still mapped
    assert manifest.summary["truth_score"] == score.as_dict()
    # the scoring can fail: the same candidates ranked weakest first miss the unmapped farms
    reverse = cands.assign(rank=cands["rank"].max() + 1 - cands["rank"])
    assert score_triage(reverse, sus.iloc[0:0], w.truth.farms, w.truth.ghosts).top_k_share == 0
    assert score_triage(reverse, sus.iloc[0:0], w.truth.farms, w.truth.ghosts).ghosts_listed == 0
