"""The flag table: flag rules, verdicts, the best method per farm and cue, the summary."""

from __future__ import annotations

import json

import geopandas as gpd
import pandas as pd
import pytest
from shapely.geometry import box

from pipeline.audit.flags import (
    CF_NOT_RUN,
    FLAG_COLUMNS,
    SUMMARY_COLUMNS,
    best_rows,
    check_thresholds,
    flag_table,
    is_flagged,
    run_summary,
    verdict,
    wants_counterfactual,
    write_flags_gpkg,
)
from pipeline.errors import AuditError


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
    assert CF_NOT_RUN == {"cf_status": "not_run", "cf_reason": ""}
    empty = flag_table([], counterfactual, scope="all")
    assert empty.empty and list(empty.columns) == list(FLAG_COLUMNS)


def test_flags_gpkg_has_each_targets_polygon(tmp_path) -> None:
    flags = flag_table(PER_METHOD, lambda row: {"cf_status": "not_run"}, scope="flagged")
    polygons = {("label_farms", "w1"): box(0, 0, 0.01, 0.01)}
    path = write_flags_gpkg(tmp_path / "flags.gpkg", flags, polygons)
    gdf = gpd.read_file(path, layer="flags")
    assert gdf.crs.to_epsg() == 4326 and len(gdf) == 3
    assert gdf.geometry.notna().tolist() == [True, False, False]
    assert pd.api.types.is_string_dtype(gdf["methods_flagged"])
    with pytest.raises(AuditError):
        check_thresholds(2.0, 0.1, 0.0)
