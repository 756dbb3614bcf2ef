"""Pure parts of the shortcut experiment: overrides, targets from the truth, the summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.experiments import shortcut as sc


def test_overrides_share_the_world_and_change_the_seed() -> None:
    base = load_config("configs/demo.yaml")
    cfgs = [
        load_config("configs/demo.yaml", sc.experiment_overrides(base, "confounded", s))
        for s in (0, 2)
    ]
    assert [c.run.name for c in cfgs] == ["shortcut-confounded-s0", "shortcut-confounded-s2"]
    assert [c.run.seed for c in cfgs] == [0, 2]
    assert cfgs[0].world == cfgs[1].world and cfgs[0].world.seed == base.run.seed
    assert cfgs[0].split_seed == cfgs[1].split_seed == base.split_seed
    assert "label_farms" in cfgs[1].attribute.targets
    assert cfgs[1].audit.counterfactual_scope == "all"
    # the demo caps Integrated Gradients; the experiment lifts the cap for every target
    assert base.attribute.max_targets.get("integrated_gradients") is not None
    assert cfgs[0].attribute.max_targets.get("integrated_gradients") is None
    assert cfgs[0].attribute.ig_steps == sc.EXPERIMENT_IG_STEPS


def test_experiment_worlds_differ_only_where_they_must() -> None:
    """The experiment's confounded and clean worlds differ in where snow goes (and names);
    both plant farm twins as look-alikes; the demo world's runs get their own names."""
    conf, clean = (load_config(sc.WORLDS["shortcut"][v]) for v in sc.VARIANTS)
    assert conf.world is not None and clean.world is not None
    assert (conf.world.snow, clean.world.snow) == ("confounded", "scattered")
    same = {"name", "snow"}
    assert conf.world.model_dump(exclude=same) == clean.world.model_dump(exclude=same)
    assert conf.world.lookalike_layout == "farms" and conf.world.lookalike_swir_shift == 0
    for section in ("tiles", "train", "predict", "attribute", "audit"):
        assert getattr(conf, section) == getattr(clean, section), section
    demo = load_config(sc.WORLDS["demo"]["confounded"])
    assert demo.world is not None and demo.world.name != conf.world.name
    names = {
        load_config(
            sc.WORLDS[w]["confounded"],
            sc.experiment_overrides(demo, "confounded", 0, sc.experiment_name(w)),
        ).run.name
        for w in sc.WORLDS
    }
    assert names == {"shortcut-confounded-s0", "shortcut-demo-confounded-s0"}
    with pytest.raises(ConfigError, match="unknown world 'nowhere'"):
        sc.run_experiment([0], ["confounded"], [], world="nowhere")


def test_targets_and_summary() -> None:
    truth = pd.DataFrame(
        {"farm_id": ["w1", "w2", "w3", "w4"], "snow_beside": [True, True, False, np.nan]}
    )
    assert sc.snow_bearing(truth) == {"w1", "w2"}
    flags = pd.DataFrame(
        {
            "target": ["label_farms"] * 4 + ["predicted_farms"],
            "target_id": ["w1", "w2", "w1", "w3", "w1"],
            "cue": ["snow", "snow", "water", "snow", "snow"],
            "verdict": ["confirmed", "unconfirmed", "confirmed", "confirmed", "confirmed"],
            "prob_change": [-0.05, -0.05, 0.0, -0.4, -0.9],
            "logit_change": [-2.0, -0.1, 0.0, -3.0, -4.0],
            "score_change": [-1.0, -0.1, 0, 0, 0],
            "moved_by": ['["log_odds"]', "[]", '["probability"]', "[]", "[]"],
            "placebo_logit_change": [-0.1, 0.0, 0.0, 0.0, 0.0],
        }
    )
    conf = sc.outcomes(flags, {"w1", "w2"}, variant="confounded", seed=0)
    assert sorted(conf["farm_id"]) == ["w1", "w2"]  # snow rows of labelled farms only
    clean = pd.DataFrame(
        {
            "variant": "clean",
            "seed": [0, 1],
            "farm_id": ["w1", "w1"],
            "verdict": "not_flagged",
            "flagged": False,
            "confirmed": False,
            "confirmed_without_log_odds": False,
            "prob_change": [0.01, -0.01],
            "logit_change": [0.1, -0.1],
            "score_change": [0.0, 0.0],
        }
    )
    iou = {("confounded", 0): 0.61, ("clean", 0): 0.7, ("clean", 1): None}
    summary = sc.summarize(pd.concat([conf, clean]), {"clean": 1}, iou)
    c = summary["confounded"]
    assert c["targets"] == 2 and c["flagged_fraction"] == 1.0
    assert c["confirmed_fraction"] == 0.5 and not c["accepted"]
    assert c["mean_prob_change"] == pytest.approx(-0.05)
    # w1 was confirmed by the log-odds test alone: probability moved by 0.05 only
    assert c["confirmed_without_log_odds_fraction"] == 0.0
    assert c["mean_logit_change"] == pytest.approx(-1.05)
    assert c["confirmed_without_placebo_fraction"] == 0.5  # w1 moved; w2 did not
    assert c["mean_placebo_logit_change"] == pytest.approx(-0.05)
    assert c["per_seed"][0]["test_iou"] == 0.61 and c["per_seed"][0]["flagged_fraction"] == 1.0
    k = summary["clean"]
    assert k["seeds"] == [0, 1] and k["confirmed_fraction"] == 0.0 and k["accepted"]
    assert k["targets_without_attribution"] == 1
    table = sc.markdown_table(summary)
    assert "| confounded | 0 | 2 | 100 % | 50 % | 0 % | 50 % | -0.050 | -1.050 | -0.050 |" in table
    assert "| clean | 0, 1 | 2 | 0 % | 0 % |" in table
    assert "| confounded | 0 | 2 | 100 % | 50 % | 0.61 |" in table  # per seed, with test IoU
    assert "| clean | 1 | 1 | 0 % | 0 % | – |" in table


def test_planted_subset_is_reported_beside_the_snow_bearing_targets() -> None:
    truth = pd.DataFrame(
        {
            "farm_id": ["w1", "w2", "w3"],
            "snow_beside": [True, True, False],
            "snow_planted": [True, False, False],
        }
    )
    assert sc.snow_planted(truth) == {"w1"} and sc.snow_bearing(truth) == {"w1", "w2"}
    rows = pd.DataFrame(
        {
            "variant": "confounded",
            "seed": 0,
            "farm_id": ["w1", "w2"],
            "verdict": ["confirmed", "unconfirmed"],
            "flagged": True,
            "confirmed": [True, False],
            "prob_change": [-0.5, 0.0],
            "score_change": [-1.0, 0.0],
            "snow_planted": [True, False],
            "distance_to_snow_m": [120.0, 450.0],
        }
    )
    summary = sc.summarize(rows)
    c = summary["confounded"]
    assert c["confirmed_fraction"] == 0.5
    assert c["planted_targets"] == 1 and c["planted_confirmed_fraction"] == 1.0
    assert c["near_targets"] == 1 and c["near_confirmed_fraction"] == 1.0  # w1 only is near
    assert "| 1, 100 % |" in sc.markdown_table(summary)


def test_agreement_of_the_two_counterfactuals_is_reported_per_seed() -> None:
    flags = pd.DataFrame(
        {
            "target": ["label_farms"] * 3,
            "target_id": ["w1", "w2", "w3"],
            "cue": ["snow"] * 3,
            "verdict": ["confirmed", "confirmed", "unconfirmed"],
            "moved_by": ['["log_odds"]'] * 3,
            "counterfactuals_agree": [True, "False", None],
        }
    )
    rows = sc.outcomes(flags, {"w1", "w2", "w3"}, variant="confounded", seed=3)
    assert rows["counterfactuals_agree"].tolist()[:2] == [1.0, 0.0]
    assert np.isnan(rows["counterfactuals_agree"].iloc[2])  # no clear second acquisition
    c = sc.summarize(rows)["confounded"]
    assert c["temporal_targets"] == 2 and c["counterfactuals_agree_fraction"] == 0.5
    assert c["per_seed"][3]["counterfactuals_agree_fraction"] == 0.5
    assert "fetch.alternates=1" in sc.experiment_overrides(
        load_config("configs/demo.yaml"), "confounded", 0
    )
