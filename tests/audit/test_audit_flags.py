"""The flag table: flag rules, verdicts, the best method per farm and cue, the summary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyogrio
import pytest
from shapely.geometry import box

from pipeline.audit.flags import (
    CF_NOT_RUN,
    FLAG_COLUMNS,
    SEVERITY,
    SUMMARY_COLUMNS,
    best_rows,
    check_thresholds,
    farm_columns,
    farm_table,
    flag_table,
    is_flagged,
    run_summary,
    verdict,
    verdict_in_words,
    wants_counterfactual,
    worst_verdict,
    write_flags_gpkg,
)
from pipeline.config.audit import AuditConfig
from pipeline.errors import AuditError
from pipeline.geo.styles import style_path


def test_flag_rules_and_verdicts() -> None:
    assert is_flagged(3.0, 0.2, threshold=2.0, min_effect=0.05)
    assert not is_flagged(3.0, 0.01, threshold=2.0, min_effect=0.05)  # tiny effect
    assert not is_flagged(float("nan"), 0.2, threshold=2.0, min_effect=0.05)
    v = verdict
    assert v(computable=False, cue_present=False, flagged=False, moved=None) == "not_computable"
    assert v(computable=True, cue_present=False, flagged=False, moved=None) == "cue_absent"
    assert v(computable=True, cue_present=True, flagged=True, moved=True) == "confirmed"
    assert v(computable=True, cue_present=True, flagged=True, moved=False) == "unconfirmed"
    with pytest.raises(AuditError, match=r"min_effect = 1\.5"):
        check_thresholds(2.0, 1.5, 0.1)
    with pytest.raises(AuditError, match="enrichment_threshold = -1"):
        check_thresholds(-1, 0.1, 0.1)


def test_run_summary_fractions_over_present_cues() -> None:
    flags = pd.DataFrame(
        {"cue": ["snow"] * 4, "verdict": ["confirmed", "unconfirmed", "not_flagged", "cue_absent"]}
    )
    s = run_summary(flags)["snow"]
    assert s["cue_present"] == 3 and s["flagged"] == 2 and s["confirmed"] == 1
    assert s["confirmed_fraction"] == pytest.approx(1 / 3)
    assert tuple(s) == SUMMARY_COLUMNS


def _pooled(tid: str, cue: str, method: str, enrichment: float, flagged: bool, **kw) -> dict:
    return {
        "target": "label_farms",
        "target_id": tid,
        "method": method,
        "cue": cue,
        "patch_ids": json.dumps(["p0"]),
        "n_patches": 1,
        "computable": True,
        "cue_present": True,
        "reason": "",
        "enrichment": enrichment,
        "effect": 0.2,
        "flagged": flagged,
        **kw,
    }


PER_METHOD = [
    _pooled("w1", "snow", "saliency", 3.0, True),
    _pooled("w1", "snow", "integrated_gradients", 6.0, True),
    _pooled("w1", "snow", "input_x_gradient", 9.0, False),  # higher, but not flagged
    _pooled("w2", "snow", "saliency", 1.0, False),
    _pooled("w2", "water", "saliency", float("nan"), False, cue_present=False),
]


def test_best_rows_pick_the_flagged_method_with_the_highest_enrichment() -> None:
    rows = best_rows(PER_METHOD)
    assert [(r["target_id"], r["cue"]) for r in rows] == [
        ("w1", "snow"),
        ("w2", "snow"),
        ("w2", "water"),
    ]
    assert rows[0]["method"] == "integrated_gradients"
    assert json.loads(rows[0]["methods_flagged"]) == ["integrated_gradients", "saliency"]
    assert rows[1]["method"] == "saliency" and json.loads(rows[1]["methods_flagged"]) == []
    assert best_rows([]) == []


def test_counterfactual_scope() -> None:
    w1, w2, water = best_rows(PER_METHOD)
    assert wants_counterfactual(w1, "flagged") and not wants_counterfactual(w2, "flagged")
    assert wants_counterfactual(w2, "all")
    assert not wants_counterfactual(water, "all")  # no cue, nothing to remove


def test_flag_table_runs_the_counterfactual_where_wanted_and_gives_verdicts() -> None:
    called = []

    def counterfactual(row: dict) -> dict:
        called.append(row["target_id"])
        return {"cf_status": "ok", "cf_reason": "", "moved": row["target_id"] == "w1"}

    flags = flag_table(PER_METHOD, counterfactual, scope="all")
    assert list(flags.columns) == list(FLAG_COLUMNS) and called == ["w1", "w2"]
    by = flags.set_index(["target_id", "cue"])["verdict"].to_dict()
    assert by == {
        ("w1", "snow"): "confirmed",
        ("w2", "snow"): "not_flagged",
        ("w2", "water"): "cue_absent",
    }
    assert flags.set_index(["target_id", "cue"]).loc[("w2", "water"), "cf_status"] == "not_run"
    flagged_only = flag_table(PER_METHOD, lambda row: {"cf_status": "skipped"}, scope="flagged")
    assert flagged_only["verdict"].tolist()[0] == "unconfirmed"  # no counterfactual: no proof
    assert CF_NOT_RUN == {
        "cf_status": "not_run",
        "cf_reason": "",
        "counterfactuals": "none",
        "temporal_status": "not_run",
    }
    empty = flag_table([], counterfactual, scope="all")
    assert empty.empty and list(empty.columns) == list(FLAG_COLUMNS)


def _cf(row: dict) -> dict:
    moved = row["target_id"] == "w1"
    return {
        "cf_status": "ok",
        "cf_reason": "",
        "moved": moved,
        "logit_change": -5.4 if moved else -0.1,
        "placebo_logit_change": 0.0001,
        "placebo_replaced": 100,
        "specific": moved,
        "prob": 0.9,
        "prob_cf": 0.3 if moved else 0.88,
        "prob_change": -0.6 if moved else -0.02,
        "moved_by": json.dumps(["probability", "log_odds"] if moved else []),
    }


def test_farm_table_one_row_per_farm_with_real_types() -> None:
    flags = flag_table(PER_METHOD, _cf, scope="all")
    farms = farm_table(flags)
    assert list(farms.columns) == list(farm_columns(["snow", "water"]))
    assert farms["target_id"].tolist() == ["w1", "w2"]
    w1, w2 = farms.iloc[0], farms.iloc[1]
    assert (w1["verdict"], w1["worst_cue"]) == ("confirmed", "snow")
    assert w1["snow_enrichment"] == pytest.approx(6.0) and w1["snow_logit_change"] == -5.4
    assert w1["snow_confirmed"] and w1["snow_flagged"] and not w1["water_flagged"]
    assert w1["water_verdict"] == "" and np.isnan(w1["water_enrichment"])  # w1 has no water row
    assert (w2["verdict"], w2["worst_cue"]) == ("not_flagged", "snow")
    assert w2["water_verdict"] == "cue_absent" and w2["patch_ids"] == "p0"
    assert farms["snow_confirmed"].dtype == bool and farms["snow_effect"].dtype == float
    assert farm_columns(["snow"]).meanings["snow_logit_change"].startswith("snow: change")
    assert worst_verdict(["cue_absent", "not_flagged"]) == "not_flagged"
    assert worst_verdict(["?"]) == "not_computable"


def test_verdicts_in_words_state_the_rule_and_its_numbers() -> None:
    flags = flag_table(PER_METHOD, _cf, scope="all").set_index(["target_id", "cue"])
    audit = AuditConfig()
    w1 = verdict_in_words(flags.loc[("w1", "snow")].to_dict() | {"cue": "snow"}, audit)
    assert w1.startswith("flagged: enrichment 6x >= 2 and effect 0.2 >= 0.05 (integrated_")
    assert "confirmed: log-odds fell 5.4 when the snow was removed (|change| >= 1)" in w1
    assert "moved the log-odds only 0.0001" in w1
    w2 = verdict_in_words(flags.loc[("w2", "snow")].to_dict() | {"cue": "snow"}, audit)
    assert w2.startswith("not flagged: enrichment 1x < 2")
    water = flags.loc[("w2", "water")].to_dict() | {"cue": "water"}
    assert verdict_in_words(water, audit).startswith("no water outside the farm")


def test_flags_gpkg_has_one_row_per_farm_with_its_polygon(tmp_path) -> None:
    farms = farm_table(flag_table(PER_METHOD, _cf, scope="all"))
    polygons = {("label_farms", "w1"): box(0, 0, 0.01, 0.01)}
    path = write_flags_gpkg(tmp_path / "flags.gpkg", farms, polygons)
    gdf = pyogrio.read_dataframe(path, layer="flags")
    assert gdf.crs.to_epsg() == 4326 and len(gdf) == 2
    assert gdf.geometry.notna().tolist() == [True, False]
    assert gdf["snow_confirmed"].dtype == bool and gdf["snow_confirmed"].tolist() == [True, False]
    assert gdf["snow_logit_change"].dtype == float
    assert not any(
        str(v).startswith("[")
        for v in gdf.select_dtypes(include=["object", "string"]).to_numpy().ravel()
    )
    assert style_path(path).read_text().count("<category ") == len(SEVERITY)
    with pytest.raises(AuditError):
        check_thresholds(2.0, 0.1, 0.0)
