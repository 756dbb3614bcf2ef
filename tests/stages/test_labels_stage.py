"""The labels stage end to end on a hand-written extract: outputs, plan rules, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import Point, box
from support.osm import EXPECTED, X0, Y0, OsmBuilder

from pipeline.cli import main
from pipeline.errors import LabelsError
from pipeline.geo.crs import to_epsg
from pipeline.manifest import Manifest
from pipeline.paths import RunPaths
from pipeline.stages import labels, run_stage


def _read(cfg):
    paths = RunPaths(cfg.run.data_root, cfg.run.name)
    return (
        gpd.read_file(paths.farms, layer="farms"),
        gpd.read_file(paths.rejected, layer="rejected"),
        gpd.read_file(paths.plan, layer="plan"),
    )


def test_stage_writes_the_contract(demo_osm, make_cfg) -> None:
    _, osm = demo_osm
    cfg = make_cfg(osm_file=str(osm))
    manifest = run_stage("labels", cfg)
    farms, rejected, plan = _read(cfg)
    assert farms.crs.to_epsg() == 4326 and plan.crs.to_epsg() == 4326
    assert list(farms.columns[:7]) == [
        "farm_id",
        "osm_id",
        "osm_type",
        "tags",
        "area_m2",
        "source",
        "n_generators_merged",
    ]
    assert sorted(farms["farm_id"]) == sorted(EXPECTED)
    w100 = farms.set_index("farm_id").loc["w100"]
    assert json.loads(w100["tags"]) == {"power": "plant", "plant:source": "solar"}
    assert w100["osm_id"] == 100 and w100["osm_type"] == "way"
    assert w100["source"] == "osm-file:demo.osm"
    assert set(rejected.columns) >= {"osm_id", "osm_type", "reason", "geometry"}
    assert rejected["geometry"].isna().sum() == 2  # the broken rings have no geometry
    # plan
    assert list(plan["patch_id"]) == [f"p{i:05d}" for i in range(len(plan))]
    assert set(plan["kind"]) == {"positive", "negative"}
    assert ((plan["x0"] % 10 == 0) & (plan["y0"] % 10 == 0)).all()
    assert (plan["size"] == 256).all() and (plan["gsd"] == 10).all()
    assert set(plan["epsg"]) == {32618}
    shown = {f for ids in plan.loc[plan["kind"] == "positive", "farm_ids"] for f in json.loads(ids)}
    assert shown == set(EXPECTED)
    w800 = plan[plan["farm_ids"].str.contains("w800")]
    assert len(w800) >= 2  # the 3 km farm is cut by patch edges
    negatives = plan[plan["kind"] == "negative"]
    assert len(negatives) == (plan["kind"] == "positive").sum()  # ratio 1
    farms_utm = [to_epsg(g, 32618) for g in farms.geometry]
    for row in negatives.itertuples():
        square = box(row.x0, row.y0 - 2560, row.x0 + 2560, row.y0)
        assert min(square.distance(g) for g in farms_utm) >= 300
        assert json.loads(row.farm_ids) == []
    summary = manifest.summary
    assert summary["broken"] == 2 and summary["repaired"] == 1
    assert summary["aoi_from"] == "extract header bbox"
    assert {"r310", "w300", "w600"} <= set(summary["rejected_ids"])
    assert summary["plan"]["farms_not_fully_covered"] == 0
    assert Manifest.read(RunPaths(cfg.run.data_root, "t").manifest("labels")).stage == "labels"


def test_plan_is_seeded(demo_osm, make_cfg) -> None:
    _, osm = demo_osm
    plans = []
    for seed in (0, 0, 1):
        cfg = make_cfg(seed=seed, osm_file=str(osm))
        labels.run(cfg, RunPaths(cfg.run.data_root, cfg.run.name))
        plans.append(_read(cfg)[2].drop(columns="geometry"))
    assert plans[0].equals(plans[1])
    assert not plans[0][["x0", "y0"]].equals(plans[2][["x0", "y0"]])


def test_aoi_as_utm_bbox_and_as_file(demo_osm, make_cfg, tmp_path: Path) -> None:
    _, osm = demo_osm
    # only the southern row of features (y < Y0 + 500 m) in a UTM bbox
    cfg = make_cfg(
        osm_file=str(osm),
        aoi_bbox=[X0 - 100, Y0 - 100, X0 + 3300, Y0 + 500],
        aoi_crs="EPSG:32618",
        negatives_per_positive=0,
    )
    out = labels.run(cfg, RunPaths(cfg.run.data_root, cfg.run.name))
    assert sorted(_read(cfg)[0]["farm_id"]) == ["r200", "w100", "w400"]
    # the AOI is kept for the map stage: one polygon in EPSG:4326
    kept = gpd.read_file(RunPaths(cfg.run.data_root, cfg.run.name).aoi, layer="aoi")
    assert len(kept) == 1 and kept.crs.to_epsg() == 4326
    utm = to_epsg(kept.geometry.iloc[0], 32618)
    assert utm.bounds == pytest.approx((X0 - 100, Y0 - 100, X0 + 3300, Y0 + 500), abs=0.5)
    assert out.summary["outside_aoi"] == 4  # w500, w600, w700, w800
    aoi = gpd.GeoDataFrame(
        geometry=[box(X0 - 100, Y0 + 900, X0 + 300, Y0 + 1100)], crs="EPSG:32618"
    )
    aoi.to_file(tmp_path / "aoi.geojson", driver="GeoJSON")
    cfg = make_cfg(osm_file=str(osm), aoi_file=str(tmp_path / "aoi.geojson"))
    labels.run(cfg, RunPaths(cfg.run.data_root, cfg.run.name))
    assert list(_read(cfg)[0]["farm_id"]) == ["w500"]


def test_hard_negatives_hook(demo_osm, make_cfg, tmp_path: Path) -> None:
    _, osm = demo_osm
    spots = [
        to_epsg(Point(x, y), 4326, src=32618)
        for x, y in [(X0 + 9000, Y0 + 9000), (X0 + 100, Y0 + 100)]
    ]  # the second lies on a farm
    gpd.GeoDataFrame(geometry=spots, crs=4326).to_file(tmp_path / "fp.gpkg")
    cfg = make_cfg(osm_file=str(osm), hard_negatives_file=str(tmp_path / "fp.gpkg"))
    out = labels.run(cfg, RunPaths(cfg.run.data_root, cfg.run.name))
    plan = _read(cfg)[2]
    assert plan["hard"].sum() == 1 and out.summary["plan"]["hard_negatives_refused_near_farm"] == 1
    assert plan.loc[plan["hard"], "kind"].item() == "negative"


def _yaml(tmp_path: Path, labels_yaml: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(
        f"run: {{name: t, data_root: {tmp_path / 'data'}}}\n"
        f"labels: {{{labels_yaml}}}\nfetch: {{catalog: unused}}\n"
    )
    return path


def test_bad_input_exits_nonzero_and_writes_nothing(
    demo_osm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, osm = demo_osm
    paths = RunPaths(tmp_path / "data", "t")
    # an empty AOI
    code = main(
        ["labels", "--config", str(_yaml(tmp_path, f"osm_file: {osm}, aoi_bbox: [1, 1, 1, 2]"))]
    )
    assert code != 0 and "aoi_bbox" in capsys.readouterr().err
    # an extract without solar features
    b = OsmBuilder()
    b.way(1, [(X0, Y0), (X0 + 100, Y0), (X0 + 100, Y0 + 100), (X0, Y0)], {"building": "roof"})
    none = b.write_osm(tmp_path / "none.osm")
    code = main(["labels", "--config", str(_yaml(tmp_path, f"osm_file: {none}"))])
    err = capsys.readouterr().err
    assert code != 0 and "no solar features" in err and "Traceback" not in err
    # an AOI with no farm in it
    code = main(
        [
            "labels",
            "--config",
            str(_yaml(tmp_path, f"osm_file: {osm}, aoi_bbox: [10, 10, 10.1, 10.1]")),
        ]
    )
    assert code != 0 and "no farm is left in the AOI" in capsys.readouterr().err
    # a missing extract
    code = main(["labels", "--config", str(_yaml(tmp_path, "osm_file: nowhere.osm.pbf"))])
    assert code != 0 and "does not exist" in capsys.readouterr().err
    for path in (paths.farms, paths.rejected, paths.plan, paths.manifest("labels")):
        assert not path.exists()
    leftovers = [p.name for p in paths.stage_dir("labels").glob("*") if p.name != "config.json"]
    assert leftovers == []


def test_previous_outputs_survive_a_failed_rerun(demo_osm, make_cfg) -> None:
    _, osm = demo_osm
    cfg = make_cfg(osm_file=str(osm))
    paths = RunPaths(cfg.run.data_root, cfg.run.name)
    labels.run(cfg, paths)
    before = paths.farms.read_bytes()
    bad = make_cfg(osm_file=str(osm), aoi_bbox=[10, 10, 10.1, 10.1])
    with pytest.raises(LabelsError):
        labels.run(bad, paths)
    assert paths.farms.read_bytes() == before
