"""The triage's pure functions on hand-made geometries and tables with known answers."""

from __future__ import annotations

import json
import math

import geopandas as gpd
import pandas as pd
import pytest
from shapely.geometry import box

from pipeline.config.triage import TriageConfig
from pipeline.triage.evidence import (
    focus,
    label_attribution,
    label_cues,
    object_attribution,
    object_cues,
)
from pipeline.triage.objects import built_class, from_map, from_predicted
from pipeline.triage.overlap import cover
from pipeline.triage.ranking import (
    SUGGESTED_TAGS,
    Evidence,
    candidate_score,
    candidates,
    suspect_reason,
    suspects,
)
from pipeline.triage.review import (
    CANDIDATE_COLUMNS,
    SUSPECT_COLUMNS,
    geojson_text,
    layer,
    osm_fields,
    review_collection,
)

CFG = TriageConfig()
UTM = 32618
X, Y = 600_000.0, 4_200_000.0  # inside zone 18N


def frame(geoms: list, crs: int = UTM, **cols) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(pd.DataFrame(cols), geometry=geoms, crs=crs)


def test_cover_measures_shares_and_iou_exactly() -> None:
    these = frame([box(0, 0, 100, 100), box(500, 500, 600, 600)])
    those = frame([box(50, 0, 150, 100), box(0, 0, 10, 10)], ids=["a", "b"])
    out = cover(these, those, those["ids"])
    # first: half covered by a (IoU 50/150), plus b's corner inside that half? no: b at x<10
    assert out.loc[0, "covered"] == pytest.approx(0.5 + 0.01)
    assert out.loc[0, "best_iou"] == pytest.approx(5000 / 15000)
    assert out.loc[0, "best_id"] == "a"
    assert out.loc[1].tolist() == [0.0, 0.0, ""]


def test_candidate_score_rises_with_evidence_and_a_confirmed_cue_cuts_it() -> None:
    base = candidate_score(Evidence(0.8, 10.0, 0.9, ""), CFG)
    assert base == pytest.approx(0.8 * 10 / 12 * 0.9)
    assert candidate_score(Evidence(0.9, 10.0, 0.9, ""), CFG) > base
    assert candidate_score(Evidence(0.8, 20.0, 0.9, ""), CFG) > base
    assert candidate_score(Evidence(0.8, 10.0, 0.3, ""), CFG) < base
    assert candidate_score(Evidence(0.8, 10.0, 0.9, "snow"), CFG) == pytest.approx(base * 0.25)
    # not attributed: the neutral focus, not a free pass
    assert candidate_score(Evidence(0.8, 10.0, math.nan, ""), CFG) == pytest.approx(
        0.8 * 10 / 12 * 0.5
    )
    assert math.isnan(focus(0.0, 0.0)) and focus(0.75, 0.25) == 0.75


def test_timeline_built_class_and_the_standing_penalty() -> None:
    assert built_class(True, "2016-01", "2015-07") == "new"
    assert built_class(False, "2015-07", "2015-07") == "standing"
    assert built_class(False, "2015-10", "2015-07") == ""  # first seen after a gap: unknown
    assert built_class(False, "", "") == ""
    base = candidate_score(Evidence(0.8, 10.0, 0.9, "", "new"), CFG)
    assert candidate_score(Evidence(0.8, 10.0, 0.9, ""), CFG) == pytest.approx(base)
    assert candidate_score(Evidence(0.8, 10.0, 0.9, "", "standing"), CFG) == pytest.approx(
        base * CFG.standing_penalty
    )


def test_a_new_farm_outranks_a_stronger_standing_look_alike() -> None:
    farms = frame(
        [box(0, 0, 300, 300), box(1000, 0, 1300, 300), box(2000, 0, 2300, 300)],
        farm_id=["m1", "m2", "m3"],
        area_ha=9.0,
        mean_prob=[0.95, 0.6, 0.7],
        max_prob=1.0,
        construction_window=["2015-07", "2016-01", "2015-10"],
        new=[False, True, False],
        **{"status_2015-07": ["farm", "clear", "unseen"], "status_2016-01": "farm"},
    )
    objects = from_map(farms)
    assert list(objects["built"]) == ["standing", "new", ""]
    labels = frame([box(5000, 0, 5100, 100)], farm_id=["w1"])
    shares = pd.DataFrame(
        math.nan, index=objects.index, columns=["share_inside", "share_ring", "share_outside"]
    )
    cues = pd.Series(["", "", ""], index=objects.index)
    out = candidates(objects, cover(objects, labels, labels["farm_id"]), shares, cues, CFG)
    assert list(out["object_id"]) == ["m3", "m2", "m1"]
    assert list(out["built"]) == ["", "new", "standing"]
    flat = candidates(
        objects,
        cover(objects, labels, labels["farm_id"]),
        shares,
        cues,
        CFG.model_copy(update={"standing_penalty": 1.0}),
    )
    assert list(flat["object_id"]) == ["m1", "m3", "m2"]  # without the timeline: probability


def test_suspect_reasons_in_order_of_strength() -> None:
    assert suspect_reason(0.05, 0.0, 0.9, "snow", CFG, 0.5) == "not_found"
    assert suspect_reason(0.9, 0.8, 0.9, "snow", CFG, 0.5) == "confirmed_cue"
    assert suspect_reason(0.9, 0.8, 0.3, "", CFG, 0.5) == "surroundings"
    assert suspect_reason(0.6, 0.4, 0.9, "", CFG, 0.5) == "outline_mismatch"
    assert suspect_reason(0.9, 0.8, math.nan, "", CFG, 0.5) is None
    assert suspect_reason(0.9, 0.8, 0.9, "", CFG, 0.5) is None


def test_candidates_exclude_labelled_objects_and_rank_by_score() -> None:
    objects = frame(
        [box(0, 0, 300, 300), box(1000, 0, 1100, 100), box(2000, 0, 2400, 400)],
        object_id=["m1", "m2", "m3"],
        source="map",
        area_ha=[9.0, 1.0, 16.0],
        mean_prob=[0.9, 0.9, 0.6],
        max_prob=1.0,
    )
    labels = frame([box(0, 0, 300, 300)], farm_id=["w1"])
    shares = pd.DataFrame(
        math.nan, index=objects.index, columns=["share_inside", "share_ring", "share_outside"]
    )
    cues = pd.Series(["", "", ""], index=objects.index)
    out = candidates(objects, cover(objects, labels, labels["farm_id"]), shares, cues, CFG)
    assert list(out["object_id"]) == ["m3", "m2"]  # m1 is in OSM
    assert list(out["task_id"]) == ["c0001", "c0002"] and list(out["rank"]) == [1, 2]
    assert (
        out["suggested_tags"] == "power=plant;plant:source=solar;plant:method=photovoltaic"
    ).all()


def test_attribution_and_cues_join_labels_by_id_and_objects_by_overlap() -> None:
    attribution = frame(
        [box(0, 0, 10, 10), box(0, 0, 10, 10), box(100, 100, 110, 110)],
        farm_id=["w1", "w1", "p1"],
        kind=["label_farms", "label_farms", "predicted_farms"],
        share_inside=[0.2, 0.4, 0.9],
        share_ring=[0.5, 0.5, 0.1],
        share_outside=[0.3, 0.1, 0.0],
    )
    ids = pd.Series(["w1", "w2"])
    shares = label_attribution(attribution, ids)
    assert shares.loc[0, "share_inside"] == pytest.approx(0.3)
    assert shares.loc[1].isna().all()
    objects = frame([box(95, 95, 120, 120), box(500, 500, 510, 510)])
    near = object_attribution(objects, attribution)
    assert near.loc[0, "share_inside"] == pytest.approx(0.9) and near.loc[1].isna().all()
    flags = frame(
        [box(0, 0, 10, 10), box(100, 100, 110, 110), box(500, 500, 510, 510)],
        target=["label_farms", "predicted_farms", "predicted_farms"],
        target_id=["w1", "p1", "p2"],
        verdict=["confirmed", "confirmed", "unconfirmed"],
        worst_cue=["snow", "water", "cloud"],
    )
    assert label_cues(flags, ids).tolist() == ["snow", ""]
    assert object_cues(objects, flags).tolist() == ["water", ""]


def test_suspects_carry_osm_fields_or_empty_ones() -> None:
    labels = frame([box(0, 0, 100, 100), box(1000, 0, 1100, 100)], farm_id=["w1", "a2"])
    labels.loc[:, "osm_id"] = [1.0, math.nan]
    labels = labels.assign(**osm_fields(labels))
    assert labels["osm_id"].tolist() == ["1", ""] and labels["osm_timestamp"].tolist() == ["", ""]
    objects = frame([box(0, 0, 100, 100)], object_id=["m1"])
    shares = pd.DataFrame(
        math.nan, index=labels.index, columns=["share_inside", "share_ring", "share_outside"]
    )
    out = suspects(
        labels, cover(labels, objects, objects["object_id"]), shares, pd.Series(["", ""]), CFG, 0.5
    )
    assert out["farm_id"].tolist() == ["a2"] and out["reason"].tolist() == ["not_found"]
    assert out["osm_id"].tolist() == [""] and "built" in out["action"].iloc[0]


def test_predicted_halves_of_one_farm_merge_into_one_object() -> None:
    halves = frame(
        [
            box(X, Y, X + 50, Y + 100),
            box(X + 50, Y, X + 100, Y + 100),
            box(X + 500, Y, X + 600, Y + 100),
        ],
        pred_id=["a", "b", "c"],
        patch_id=["p1", "p2", "p2"],
        pixels=[50, 50, 100],
        mean_prob=[0.6, 0.8, 0.9],
        max_prob=[0.7, 0.95, 0.99],
    ).to_crs(4326)
    out = from_predicted(halves)
    assert list(out["object_id"]) == ["a;b", "c"]
    assert out["mean_prob"].iloc[0] == pytest.approx(0.7)
    assert out["area_ha"].iloc[0] == pytest.approx(1.0, rel=1e-4)
    assert out["max_prob"].iloc[0] == pytest.approx(0.95)


def test_review_geojson_has_one_task_per_row_and_tags_only_on_candidates() -> None:
    geom = box(-75.7, 37.7, -75.69, 37.71)
    cands = layer(
        frame([geom], crs=4326, task_id=["c0001"], score=[0.5], focus=[math.nan]),
        CANDIDATE_COLUMNS,
    )
    sus = layer(frame([geom], crs=4326, task_id=["s0001"], reason=["not_found"]), SUSPECT_COLUMNS)
    doc = json.loads(geojson_text(review_collection(cands, sus)))
    first, second = doc["features"]
    assert {k: first["properties"][k] for k in SUGGESTED_TAGS} == SUGGESTED_TAGS
    assert first["properties"]["triage:task"] == "add_missing_farm"
    assert first["properties"]["triage:focus"] is None  # NaN is null, never invalid JSON
    assert second["properties"]["triage:task"] == "check_label"
    assert not set(SUGGESTED_TAGS) & set(second["properties"])
    assert all(k in SUGGESTED_TAGS or k.startswith("triage:") for k in first["properties"])
