"""Label errors, the snow-free twin and the history of a small demo world, scored against its
planted truth and read back through the labels and fetch stages' real code."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import osmium
import pystac
import pytest
import rasterio
from shapely import affinity
from shapely.geometry import box
from support.world import (
    CHANGES_OFF,
    CLEAR,
    CLOUDY,
    SNOWFREE,
    assert_rows_of,
    label_error_config,
    read_band,
    small_config,
)

from pipeline.bands import BANDS
from pipeline.config import RunConfig, load_config
from pipeline.demo import build_world, load_truth
from pipeline.demo.calendar import windows
from pipeline.demo.history import greenness, seasonal, vegetated_land
from pipeline.demo.label_errors import GHOST_GAP_M, choose_unmapped
from pipeline.demo.layout import FarmPlan
from pipeline.demo.render import coverage
from pipeline.demo.source import load_scene
from pipeline.demo.spectra import PV
from pipeline.errors import ConfigError
from pipeline.paths import RunPaths
from pipeline.stages import run_stage

CROP = (200, 200, 500, 500)
JULY = "S2A_18SVG_20150716_0_L2A"
OCT_CLOUDY = "S2A_18SVG_20151014_0_L2A"
OCT_CLEAR = "S2A_18SVG_20151024_0_L2A"
JANUARY = ["2016-01-02", "2016-01-09", "2016-01-12"]


@pytest.fixture(scope="module")
def changed(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, Path]:
    cfg = label_error_config(tmp_path_factory.mktemp("changed"))
    return cfg, build_world(cfg)


@pytest.fixture(scope="module")
def labelled(changed) -> gpd.GeoDataFrame:
    """The labels stage's farms (EPSG:32618, by farm id), read from the world's OSM file."""
    cfg, _ = changed
    run_stage("labels", cfg)
    farms = gpd.read_file(RunPaths(cfg.run.data_root, cfg.run.name).farms)
    return farms.to_crs(32618).set_index("farm_id")


def _full_pixels(geom, grid) -> tuple[tuple[slice, slice], np.ndarray]:
    cov = coverage(geom, grid)
    assert cov is not None
    return cov.window, cov.fraction == 1.0


def test_changes_leave_the_planting_and_the_january_pixels_alone(changed, tmp_path) -> None:
    _, path = changed
    plain = build_world(label_error_config(tmp_path, *CHANGES_OFF))
    for item in (CLEAR, CLOUDY):
        for name in (*BANDS, "SCL"):
            a, b = read_band(path, item, name), read_band(plain, item, name)
            np.testing.assert_array_equal(a, b, err_msg=f"{item} {name}")
    a, b = load_truth(path), load_truth(plain)
    for layer in ("farms", "snow", "distractors"):
        left, right = getattr(a, layer), getattr(b, layer)
        assert left.geometry.to_wkb().tolist() == right.geometry.to_wkb().tolist(), layer
    assert (b.farms.label_error == "none").all() and b.farms.in_osm.all() and len(b.ghosts) == 0
    assert set(b.history.role) == {"cloudy", "clear"} and b.history.present.all()


def test_unmapped_farms_are_planted_but_absent_from_osm_and_labels(changed, labelled) -> None:
    _, path = changed
    truth = load_truth(path)
    unmapped = truth.farms[truth.farms.label_error == "unmapped"]
    assert len(unmapped) == 2 and (~unmapped.in_osm).all()
    assert truth.summary["unmapped_farms"] == sorted(unmapped.farm_id)
    assert all(fid.startswith("u") for fid in unmapped.farm_id)
    assert (unmapped.osm_ids == "[]").all() and (unmapped.role == "plant_way").all()
    for farm in unmapped.itertuples():
        assert not labelled.geometry.intersects(farm.geometry).any(), farm.farm_id
        assert_rows_of(path, farm, PV, farm.pv_cover, farm.gain, crop=CROP)
    # the newest farms: built before the January window, after the last 2015 acquisition
    assert (unmapped.built == "2016-01-02").all() and (unmapped.built_after == "2015-10-24").all()


def test_labels_hold_mapped_farms_and_ghosts_with_their_edits(changed, labelled) -> None:
    _, path = changed
    truth = load_truth(path)
    mapped = truth.farms[truth.farms.in_osm]
    assert set(labelled.index) == set(mapped.farm_id) | set(truth.ghosts.farm_id)
    assert len(labelled) == truth.summary["n_osm_farms"]
    expected = {**dict(zip(mapped.farm_id, mapped.osm_version, strict=True))}
    expected |= dict(zip(truth.ghosts.farm_id, truth.ghosts.osm_version, strict=True))
    assert labelled["osm_version"].astype(int).to_dict() == expected
    stamps = dict(zip(mapped.farm_id, mapped.osm_timestamp, strict=True))
    stamps |= dict(zip(truth.ghosts.farm_id, truth.ghosts.osm_timestamp, strict=True))
    assert labelled["osm_timestamp"].to_dict() == stamps
    # a farm is mapped after the last acquisition without it and before the OSM snapshot
    for farm in mapped.itertuples():
        stamp = dt.datetime.fromisoformat(farm.osm_timestamp)
        assert stamp < dt.datetime(2016, 1, 12, tzinfo=dt.UTC), farm.farm_id
        if farm.built_after:
            assert stamp.date() >= dt.date.fromisoformat(farm.built_after), farm.farm_id


def test_shifted_outline_is_offset_by_the_recorded_shift(changed, labelled) -> None:
    cfg, path = changed
    truth = load_truth(path)
    shifted = truth.farms[truth.farms.label_error == "shifted"]
    assert len(shifted) == 1
    farm = shifted.iloc[0]
    lo, hi = cfg.world.label_shift_m
    assert lo <= float(np.hypot(farm.shift_dx_m, farm.shift_dy_m)) <= hi
    label = labelled.geometry[farm.farm_id]
    moved = affinity.translate(farm.geometry, farm.shift_dx_m, farm.shift_dy_m)
    assert label.hausdorff_distance(moved) < 0.5  # OSM stores 1e-7 degree (about 1 cm)
    assert label.hausdorff_distance(farm.geometry) > lo - 1.0
    assert_rows_of(path, farm, PV, farm.pv_cover, farm.gain, crop=CROP)  # planted where it is


def test_ghosts_are_in_osm_with_nothing_planted(changed, labelled) -> None:
    _, path = changed
    truth = load_truth(path)
    ghosts = truth.ghosts[truth.ghosts.kind != "removed"]
    assert list(ghosts.kind) == ["planned", "construction"]
    assert truth.summary["ghost_labels"] == list(ghosts.farm_id)
    assert "construction" not in json.loads(ghosts.tags.iloc[0])  # a plain power=plant
    assert json.loads(ghosts.tags.iloc[1])["construction"] == "yes"
    planted = [*truth.farms.geometry, *truth.distractors.geometry, *truth.snow.geometry]
    scene = load_scene(None, CROP)
    for ghost in ghosts.itertuples():
        assert labelled.geometry[ghost.farm_id].hausdorff_distance(ghost.geometry) < 0.5
        assert min(g.distance(ghost.geometry) for g in planted) >= GHOST_GAP_M - 1e-6
        window, full = _full_pixels(ghost.geometry, scene.grid10)
        source = np.rint(scene.bands["B08"][window][full] * 1e4)
        assert full.sum() > 20
        np.testing.assert_array_equal(read_band(path, CLEAR, "B08")[window][full], source)


def test_osm_elements_carry_version_and_timestamp(changed) -> None:
    _, path = changed
    truth = load_truth(path)
    seen: dict[int, tuple[int, str]] = {}

    class Ways(osmium.SimpleHandler):
        def way(self, w: osmium.osm.Way) -> None:
            seen[w.id] = (w.version, w.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"))

    Ways().apply_file(str(path / "world.osm.pbf"))
    for ghost in truth.ghosts.itertuples():
        assert seen[ghost.osm_id] == (ghost.osm_version, ghost.osm_timestamp)
    assert len({stamp for _, stamp in seen.values()}) > len(seen) // 2  # edits differ


def test_snowfree_twin_has_the_farms_and_no_snow(changed) -> None:
    _, path = changed
    truth = load_truth(path)
    assert truth.summary["snowfree_item"] == SNOWFREE and truth.summary["snow_item"] == CLEAR
    roles = {i["id"]: (i["role"], i["snow"], i["cloud_cover"]) for i in truth.summary["items"]}
    assert roles[SNOWFREE] == ("snowfree", False, 0.0) and roles[CLEAR][:2] == ("clear", True)
    scl = read_band(path, SNOWFREE, "SCL")
    assert not np.isin(scl, (3, 8, 9, 10, 11)).any()
    with rasterio.open(truth.snow_mask) as src:
        assert src.read(1).sum() > 100  # the clear item has snow
    scene = load_scene(None, CROP)
    gains = []
    for band, grid in (("B03", scene.grid10), ("B08", scene.grid10), ("B11", scene.grid20)):
        touched = np.zeros(grid.shape, bool)  # every pixel the snow touches, however little
        for blob in truth.snow.geometry:
            cov = coverage(blob, grid)
            if cov is not None:
                touched[cov.window] |= cov.fraction > 0
        twin = read_band(path, SNOWFREE, band).astype(np.float64)
        clear = read_band(path, CLEAR, band).astype(np.float64)
        a, b = clear[~touched], twin[~touched]
        gain = float(np.dot(a, b) / np.dot(a, a))
        gains.append(gain)
        assert 0.95 < gain < 1.05  # one small per-band gain everywhere...
        assert np.abs(b - a * gain).max() <= 2.0
        if band == "B03":  # ...and where the clear item has snow, the twin has the ground
            assert twin[touched].mean() < 0.7 * clear[touched].mean()
    assert max(abs(g - 1.0) for g in gains) > 1e-3
    for farm in truth.farms.itertuples():  # the farms are in the twin as in the clear item
        window, full = _full_pixels(farm.geometry, scene.grid10)
        twin = read_band(path, SNOWFREE, "B08")[window][full].astype(float)
        ground = scene.bands["B08"][window][full] * 1e4
        assert np.mean(ground - twin) > 200, farm.farm_id


def test_fetch_keeps_choosing_the_snowy_clear_scene(changed, labelled) -> None:
    cfg, _ = changed
    run_stage("fetch", cfg)
    index = gpd.read_file(RunPaths(cfg.run.data_root, cfg.run.name).fetch_index)
    assert len(index) > 0 and set(index["item_id"]) == {CLEAR}


def _absent(path: Path, item: str, day: dt.date, geom) -> bool:
    """True when ``geom``'s fully covered pixels of ``item`` are its season's bare ground."""
    scene = load_scene(None, CROP)
    ground = seasonal(scene.bands, vegetated_land(scene.bands), greenness(day))["B08"] * 1e4
    actual = read_band(path, item, "B08").astype(np.float64)
    gain = float(np.median(actual / ground))
    window, full = _full_pixels(geom, scene.grid10)
    diff = actual[window][full] - ground[window][full] * gain
    if np.all(np.abs(diff) <= 2.0):
        return True
    assert np.mean(diff) < -200, "neither bare ground nor panels"  # panels: far darker NIR
    return False


def test_history_builds_farms_over_time(changed) -> None:
    _, path = changed
    truth = load_truth(path)
    days = truth.summary["windows"]
    assert days == [["2015-07-16"], ["2015-10-14", "2015-10-24"], JANUARY]
    july, oct24 = dt.date(2015, 7, 16), dt.date(2015, 10, 24)
    assert (truth.farms.built == "2015-07-16").sum() == 4  # half the farms from the start
    for farm in truth.farms.itertuples():
        built = dt.date.fromisoformat(farm.built)
        if farm.farm_id == truth.summary["extended_farm"]:
            continue
        assert _absent(path, JULY, july, farm.geometry) == (built > july), farm.farm_id
        assert _absent(path, OCT_CLEAR, oct24, farm.geometry) == (built > oct24), farm.farm_id
    january = truth.history[truth.history.window == 2]
    assert january.present.sum() == len(truth.farms) * 3  # all farms, none removed, by January


def test_extended_farm_grows_and_removed_farm_disappears(changed) -> None:
    _, path = changed
    truth = load_truth(path)
    ext = truth.summary["extended_farm"]
    phases = truth.footprints[truth.footprints.farm_id == ext].set_index("phase")
    first, full = phases.geometry["first"], phases.geometry["full"]
    assert phases.last_date["first"] == "2015-07-16" and phases.first_date["full"] == "2015-10-14"
    assert 0.3 < first.area / full.area < 0.8 and first.within(full.buffer(0.01))
    areas = truth.history[truth.history.farm_id == ext].set_index("date").area_m2
    assert areas["2015-07-16"] < areas["2015-10-24"] == areas["2016-01-12"]
    july, oct24 = dt.date(2015, 7, 16), dt.date(2015, 10, 24)
    added = full.difference(first.buffer(20.0))
    assert not _absent(path, JULY, july, first.buffer(-15.0))  # the first phase stands in July
    assert _absent(path, JULY, july, added)  # the extension does not yet
    assert not _absent(path, OCT_CLEAR, oct24, added)
    removed = truth.ghosts[truth.ghosts.kind == "removed"].iloc[0]
    assert removed.farm_id == truth.summary["removed_farm"]
    assert removed.planted_until == "2015-10-24"
    assert not _absent(path, JULY, july, removed.geometry)
    assert not _absent(path, OCT_CLEAR, oct24, removed.geometry)
    scene = load_scene(None, CROP)  # gone in January: the real ground again
    window, full_px = _full_pixels(removed.geometry, scene.grid10)
    source = np.rint(scene.bands["B08"][window][full_px] * 1e4)
    np.testing.assert_array_equal(read_band(path, CLEAR, "B08")[window][full_px], source)
    rows = truth.history[truth.history.farm_id == removed.farm_id].set_index("date")
    assert rows.present.tolist() == [True, True, True, False, False, False]


def test_cloudy_history_acquisition_marks_its_clouds(changed) -> None:
    _, path = changed
    scl = read_band(path, OCT_CLOUDY, "SCL")
    cloud = np.isin(scl, (8, 9))
    assert 0.1 < cloud.mean() < 0.8 and (scl == 3).any()
    clear_scl = read_band(path, OCT_CLEAR, "SCL")
    assert not np.isin(clear_scl, (3, 8, 9, 10, 11)).any()
    brighter = read_band(path, OCT_CLOUDY, "B11")[cloud] > read_band(path, OCT_CLEAR, "B11")[cloud]
    assert brighter.mean() > 0.95
    catalog = pystac.Catalog.from_file(str(path / "stac" / "catalog.json"))
    items = {it.id: it for it in catalog.get_items(recursive=True)}
    cover = items[OCT_CLOUDY].properties["eo:cloud_cover"]
    assert abs(cover - 100.0 * np.isin(scl, (8, 9, 10)).mean()) < 0.01
    assert items[OCT_CLEAR].properties["eo:cloud_cover"] == 0.0


def test_items_carry_their_own_orbit_sun_and_dates(changed) -> None:
    _, path = changed
    catalog = pystac.Catalog.from_file(str(path / "stac" / "catalog.json"))
    items = {it.id: it.properties for it in catalog.get_items(recursive=True)}
    assert sorted(items) == sorted([JULY, OCT_CLOUDY, OCT_CLEAR, CLOUDY, SNOWFREE, CLEAR])
    assert items[SNOWFREE]["sat:relative_orbit"] == 111
    assert "_R111_" in items[SNOWFREE]["s2:product_uri"]
    for item_id, props in items.items():
        day = item_id.split("_")[2]
        assert day in props["s2:product_uri"] and props["mgrs:grid_square"] == "VG"
        if item_id != SNOWFREE:
            assert props["sat:relative_orbit"] == 11 and "_R011_" in props["s2:product_uri"]
    assert items[JULY]["view:sun_elevation"] > 60 > items[CLEAR]["view:sun_elevation"]
    orbits = [items[i]["sat:absolute_orbit"] for i in (JULY, OCT_CLEAR, CLEAR)]
    assert orbits[1] - orbits[0] == 10 * 143 and orbits[2] - orbits[1] == 8 * 143  # 10-day cycles
    # the July ground is greener than January's (NDVI of vegetated land)
    nir = read_band(path, JULY, "B08").astype(float), read_band(path, CLEAR, "B08").astype(float)
    red = read_band(path, JULY, "B04").astype(float), read_band(path, CLEAR, "B04").astype(float)
    ndvi = [np.median((n - r) / (n + r)) for n, r in zip(nir, red, strict=True)]
    assert ndvi[0] > ndvi[1] + 0.15


def test_unmapped_farms_spread_over_the_splits_training_first() -> None:
    farms = [
        FarmPlan(i, box(i * 1e3, 0, i * 1e3 + 100, 100), "rectangle", "plant_way", 0.7, 0, 9, 1)
        for i in range(8)
    ]
    splits = [(f"b{i // 2}", s) for i, s in enumerate(["train"] * 4 + ["val"] * 2 + ["test"] * 2)]
    picks = choose_unmapped(np.random.default_rng(0), farms, splits, 4)
    by_split = sorted(splits[i][1] for i in picks)
    assert by_split == ["test", "train", "train", "val"]
    for i in picks:  # each shares its block with another farm, whose patches then show it
        assert sum(block == splits[i][0] for block, _ in splits) == 2


def test_windows_group_acquisitions_closer_than_a_month() -> None:
    days = [dt.date(2015, 7, 16), dt.date(2015, 10, 14), dt.date(2015, 10, 24)]
    assert windows(days) == [0, 1, 1]


def test_config_knobs_are_checked(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, "world.unmapped_farms=0.1")
    assert cfg.world is not None and cfg.world.n_unmapped(40) == 4 and cfg.world.n_unmapped(6) == 1
    assert small_config(tmp_path, "world.unmapped_farms=3").world.n_unmapped(40) == 3
    for bad, match in (
        ("world.unmapped_farms=1.5", "share"),
        ("world.history=[2015-07-17]", "2015-07-16 or 2015-07-26"),
        ("world.history=[2015-10-24, 2015-07-16]", "increasing"),
        ("world.history=[2016-01-02]", "outside"),
        ("world.label_shift_m=[80, 40]", "label_shift_m"),
    ):
        with pytest.raises(ConfigError, match=match):
            small_config(tmp_path, bad)
    history = load_config("configs/demo.yaml").world.history
    assert [h.date.isoformat() for h in history] == ["2015-07-16", "2015-10-14", "2015-10-24"]
    assert [h.cloud_fraction for h in history] == [0.0, 0.4, 0.0]
