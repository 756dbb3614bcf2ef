"""The triage stage on the small label-error world: real GeoPackages in, review files out."""

from __future__ import annotations

import json

import geopandas as gpd
import pytest
from shapely.geometry import box
from support.triage import (
    fresh_run,
    stub_manifest,
    write_map,
    write_map_rasters,
    write_predicted,
)

from pipeline.errors import MissingArtifactError
from pipeline.report.html import Quality, ReportData, TriageView, render
from pipeline.report.inputs import read_triage
from pipeline.stages import STAGES, run_stage
from pipeline.triage.ranking import SUGGESTED_TAGS
from pipeline.triage.review import CANDIDATE_COLUMNS, OSM_FIELDS, SUSPECT_COLUMNS


def _layers(paths) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    return (
        gpd.read_file(paths.triage_review, layer="candidates"),
        gpd.read_file(paths.triage_review, layer="suspects"),
    )


def test_triage_writes_review_layers_and_one_geojson_task_each(triage_world) -> None:
    cfg, paths = fresh_run(triage_world, "full")
    farms = write_map(paths, triage_world.truth)
    write_map_rasters(paths, triage_world.truth)
    paths.map_patch("m0001").parent.mkdir(parents=True)
    paths.map_patch("m0001").write_bytes(b"")  # a composite patch the map wrote
    manifest = run_stage("triage", cfg)
    cands, sus = _layers(paths)
    assert [c for c in cands.columns if c != "geometry"] == list(CANDIDATE_COLUMNS)
    assert [c for c in sus.columns if c != "geometry"] == list(SUSPECT_COLUMNS)
    assert cands["score"].is_monotonic_decreasing and cands["source"].eq("map").all()
    assert set(cands["object_id"]) <= set(farms.loc[~farms["in_osm"], "farm_id"])
    looks = dict(zip(cands["object_id"], cands["quicklook"], strict=True))
    assert looks.get("m0001", "map/patches/m0001.tif") == "map/patches/m0001.tif"
    assert sus["osm_id"].ne("").all() and sus["osm_timestamp"].str.endswith("Z").all()
    # the map's rasters inside each label: the ghosts (nothing planted) lead, at 0.05
    ghosts = set(triage_world.truth.ghosts["farm_id"])
    assert set(sus["farm_id"].head(len(ghosts))) == ghosts
    assert sus.loc[sus["farm_id"].isin(ghosts), "map_prob"].tolist() == pytest.approx([0.05] * 3)
    assert sus["map_dates"].eq("2016-01-12").all()
    doc = json.loads(paths.triage_geojson.read_text())
    assert len(doc["features"]) == len(cands) + len(sus)
    tasks = [f["properties"]["triage:task"] for f in doc["features"]]
    assert tasks == ["add_missing_farm"] * len(cands) + ["check_label"] * len(sus)
    assert doc["features"][0]["properties"]["plant:source"] == SUGGESTED_TAGS["plant:source"]
    s = manifest.summary
    assert s["source"] == "map" and s["note"] == "" and s["candidates"] == len(cands)
    assert s["truth_score"]["top_k_share"] == 1.0 and s["truth_score"]["ghosts_listed"] == 2
    # the report lists them
    view = read_triage(paths, 3)
    assert view is not None and len(view.candidates) == min(3, len(cands))
    page = render(_report(view))
    assert 'id="triage"' in page and view.candidates[0]["task_id"] in page


def test_a_run_without_a_map_triages_predicted_patches_and_says_so(triage_world) -> None:
    cfg, paths = fresh_run(triage_world, "nomap")
    predicted = write_predicted(paths, triage_world.truth)
    paths.fetch_index.parent.mkdir(parents=True)
    gpd.GeoDataFrame(
        {
            "patch_id": ["patch0", "patch1"],
            "status": ["ok", "ok"],
            "item_id": ["S2A_A", "S2A_B"],
            "datetime": ["2016-01-12T16:02:12Z", "2016-01-09T16:00:00Z"],
        },
        geometry=[box(0, 0, 1, 1)] * 2,
        crs=4326,
    ).to_file(paths.fetch_index, layer="patches", driver="GPKG")
    paths.image("patch0").parent.mkdir(parents=True)
    paths.image("patch0").write_bytes(b"")  # the fetched patch a reviewer opens
    manifest = run_stage("triage", cfg)
    cands, _ = _layers(paths)
    assert manifest.summary["source"] == "predict"
    assert "no map" in manifest.summary["note"] and "predicted patches" in manifest.summary["note"]
    assert cands["source"].eq("predict").all()
    # each farm's two halves (two patches) are one task, not two
    assert cands["object_id"].str.contains(";").all()
    assert cands["acquisitions"].eq("S2A_A;S2A_B").all()
    assert cands["dates"].eq("2016-01-09;2016-01-12").all()
    assert cands["quicklook"].eq("fetch/patches/patch0.tif").all()
    assert 0 < manifest.summary["objects"] <= predicted["pred_id"].str[:4].nunique()
    assert manifest.summary["truth_score"]["top_k_share"] == 1.0


def test_labels_without_osm_ids_or_timestamps_still_triage(triage_world) -> None:
    cfg, paths = fresh_run(triage_world, "plain")
    write_map(paths, triage_world.truth)
    plain = gpd.read_file(paths.farms)[["farm_id", "geometry"]]  # a plain vector file
    plain.to_file(paths.farms, layer="farms", driver="GPKG")
    run_stage("triage", cfg)
    _, sus = _layers(paths)
    assert len(sus) >= 2
    for col in OSM_FIELDS:
        assert sus[col].fillna("").eq("").all(), col


def test_attribution_outside_and_confirmed_cues_make_suspects_and_cut_scores(
    triage_world,
) -> None:
    cfg, paths = fresh_run(triage_world, "evidence")
    write_map(paths, triage_world.truth)
    labels = gpd.read_file(paths.farms)
    baseline = run_stage("triage", cfg)
    found = [f for f in labels["farm_id"] if f not in baseline.summary["top_suspects"]]
    outside, cued = found[0], found[1]
    cands, _ = _layers(paths)
    top = cands.iloc[0]
    rows = labels[labels["farm_id"] == outside].assign(
        kind="label_farms", share_inside=0.2, share_ring=0.5, share_outside=0.3
    )
    paths.attribution_farms.parent.mkdir(parents=True)
    rows.to_file(paths.attribution_farms, layer="farms", driver="GPKG")
    paths.attribution_index.write_text(
        "patch_id,method,target,target_id,path,status\n"
        f"p1,saliency,label_farms,{outside},attribute/saliency/label_farms/p1__{outside}.tif,ok\n"
    )
    png = paths.quicklook("saliency", "label_farms", f"p1__{outside}")
    png.parent.mkdir(parents=True)
    png.write_bytes(b"")  # the quicklook the attribute stage drew
    flags = gpd.GeoDataFrame(
        {
            "target": ["label_farms", "predicted_farms"],
            "target_id": [cued, "p9"],
            "verdict": ["confirmed", "confirmed"],
            "worst_cue": ["snow", "water"],
        },
        geometry=[labels.loc[labels["farm_id"] == cued].geometry.iloc[0], top.geometry],
        crs=4326,
    )
    paths.flags_gpkg.parent.mkdir(parents=True)
    flags.to_file(paths.flags_gpkg, layer="flags", driver="GPKG")
    stub_manifest(paths, "attribute")
    stub_manifest(paths, "audit")  # new optional inputs: the triage is no longer current
    run_stage("triage", cfg)
    after, sus = _layers(paths)
    reasons = dict(zip(sus["farm_id"], sus["reason"], strict=True))
    assert reasons[outside] == "surroundings" and reasons[cued] == "confirmed_cue"
    looks = dict(zip(sus["farm_id"], sus["quicklook"], strict=True))
    assert looks[outside] == paths.relative(png) and looks[cued] == ""
    moved = after.set_index("object_id").loc[top["object_id"]]
    assert moved["cue"] == "water" and moved["score"] == pytest.approx(top["score"] * 0.25)


def test_triage_is_a_stage_and_needs_labels(triage_world) -> None:
    assert list(STAGES).index("triage") == list(STAGES).index("audit") + 1
    assert "triage" in STAGES["report"].optional
    cfg, paths = fresh_run(triage_world, "nolabels")
    paths.farms.unlink()
    with pytest.raises(MissingArtifactError, match="make labels"):
        run_stage("triage", cfg)


def _report(view: TriageView) -> ReportData:
    return ReportData(
        title="t",
        run="r",
        generated="now",
        answer="",
        summary={},
        quality=Quality([], None, ""),
        overview=None,
        overview_note="",
        ranking=[],
        cards=[],
        flags=[],
        run_flags=[],
        sanity={"skipped": "-"},
        faithfulness=[],
        cues=[],
        triage=view,
    )
