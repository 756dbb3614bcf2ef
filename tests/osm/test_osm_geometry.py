"""OSM reading and farm geometry: holes, broken rings, duplicates, merges, UTM zones, masks."""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import numpy as np
import osmium
import pytest
import shapely
from affine import Affine
from pyproj import Geod
from rasterio.crs import CRS
from shapely.geometry import box
from support.osm import EXPECTED, GENERATOR, PLANT, REJECTED, OsmBuilder, zone_crossing_features

from pipeline.errors import LabelsError
from pipeline.geo.crs import area_m2, to_epsg
from pipeline.geo.masks import farms_on_grid, rasterize_mask
from pipeline.geo.plan import PlanParams, footprint, plan_patches
from pipeline.geo.raster import Grid
from pipeline.osm.extract import read_extract
from pipeline.osm.features import OsmFeature
from pipeline.osm.geometry import FarmRules, build_farms
from pipeline.osm.overpass import parse_json, parse_xml


def _check_demo_farms(result) -> None:
    farms = result.farms.set_index("farm_id")
    assert sorted(farms.index) == sorted(EXPECTED)
    for fid, (area, merged) in EXPECTED.items():
        assert farms.loc[fid, "area_m2"] == pytest.approx(area, rel=0.01), fid
        assert farms.loc[fid, "n_generators_merged"] == merged, fid
    assert bool(farms.loc["w700", "repaired"]) and not bool(farms.loc["w100", "repaired"])
    assert len(farms.loc["r200", "geometry"].geoms[0].interiors) == 1  # the hole survives
    rejected = {(t, i): r for t, i, r in result.rejected[["osm_type", "osm_id", "reason"]].values}
    assert set(rejected) == set(REJECTED)
    for key, prefix in REJECTED.items():
        assert rejected[key].startswith(prefix), rejected[key]
    assert result.counts["broken"] == 2 and result.counts["repaired"] == 1
    assert result.counts["generators_merged_into_plants"] == 2


def test_osm_xml_extract_gives_known_farms(demo_osm) -> None:
    _, path = demo_osm
    extract = read_extract(path)
    assert extract.header_bbox is not None
    _check_demo_farms(build_farms(extract.features, FarmRules()))


@pytest.mark.parametrize("suffix", [".osm.bz2", ".osm.pbf"])
def test_bz2_and_pbf_read_the_same(demo_osm, tmp_path: Path, suffix: str) -> None:
    _, path = demo_osm
    out = tmp_path / f"demo{suffix}"
    if suffix == ".osm.bz2":
        out.write_bytes(bz2.compress(path.read_bytes()))
    else:
        header = osmium.io.Header()
        header.add_box(osmium.osm.Box(osmium.osm.Location(-76, 37), osmium.osm.Location(-75, 38)))
        with osmium.SimpleWriter(str(out), header=header) as writer:
            for obj in osmium.FileProcessor(str(path)):
                writer.add(obj)
    extract = read_extract(out)
    _check_demo_farms(build_farms(extract.features, FarmRules()))
    if suffix == ".osm.pbf":
        assert extract.header_bbox == (-76.0, 37.0, -75.0, 38.0)


def test_overpass_json_and_xml_match_the_extract(demo_osm) -> None:
    builder, path = demo_osm
    from_file = build_farms(read_extract(path).features, FarmRules()).farms
    for parsed in (parse_json(builder.overpass_json()), parse_xml(builder.overpass_xml())):
        result = build_farms(parsed, FarmRules())
        _check_demo_farms(result)
        for a, b in zip(from_file.geometry, result.farms.geometry, strict=True):
            assert a.symmetric_difference(b).area < 1e-6 * a.area


def test_min_area_and_merge_rules_are_configurable(demo_osm) -> None:
    _, path = demo_osm
    features = read_extract(path).features
    loose = build_farms(features, FarmRules(min_area_m2=100)).farms
    assert "w600" in set(loose["farm_id"])  # the rooftop array passes a 100 m² threshold
    apart = build_farms(features, FarmRules(cluster_gap_m=0.5)).farms
    assert "w500" not in set(apart["farm_id"])  # 1600 m² rows stay apart and are too small


def test_aoi_filter_counts_outside(demo_osm) -> None:
    _, path = demo_osm
    w100 = build_farms(read_extract(path).features, FarmRules()).farms.set_index("farm_id")
    aoi = w100.loc["w100", "geometry"].buffer(1e-4)
    result = build_farms(read_extract(path).features, FarmRules(), aoi)
    assert list(result.farms["farm_id"]) == ["w100"]
    assert result.counts["outside_aoi"] == 6  # five farms and the rooftop array


def test_zone_crossing_farm_is_planned_and_masked_in_both_zones(tmp_path: Path) -> None:
    b: OsmBuilder = zone_crossing_features()
    path = b.write_osm(tmp_path / "zone.osm")
    farms = build_farms(read_extract(path).features, FarmRules()).farms.set_index("farm_id")
    geod = Geod(ellps="WGS84")
    for fid in ("w900", "w901"):
        known = abs(geod.geometry_area_perimeter(farms.loc[fid, "geometry"])[0])
        assert farms.loc[fid, "area_m2"] == pytest.approx(known, rel=0.01)
    # small patches so the 1 km farm needs several, on both sides of 72°W
    params = PlanParams(size=64, gsd=10.0, negatives_per_positive=0)
    plan = plan_patches(farms.reset_index(), box(-72.2, 39.9, -71.8, 40.1), params, seed=0)
    crossing = plan.patches[plan.patches["farm_ids"].str.contains("w900")]
    assert set(crossing["epsg"]) == {32618, 32619}
    assert plan.counts["farms_not_fully_covered"] == 0
    farm = farms.loc["w900", "geometry"]
    for row in crossing.itertuples():
        assert row.x0 % 10 == 0 and row.y0 % 10 == 0
        grid = Grid(CRS.from_epsg(row.epsg), Affine(10, 0, row.x0, 0, -10, row.y0), 64, 64)
        ids, geoms = farms_on_grid(farms.reset_index(), grid)
        assert "w900" in ids and json.loads(row.farm_ids) == sorted(ids)
        mask = rasterize_mask(geoms, grid)
        inside = to_epsg(farm, row.epsg).intersection(footprint(row.epsg, row.x0, row.y0, params))
        tolerance = inside.length * 10 / 2 + 400
        assert abs(mask.sum() * 100 - inside.area) <= tolerance


def test_mask_pixel_count_matches_area_and_rules() -> None:
    grid = Grid(CRS.from_epsg(32618), Affine(10, 0, 430_000, 0, -10, 4_151_000), 100, 100)
    # a 303 x 207 m rectangle not aligned to the pixel lattice
    rect = box(430_103.0, 4_150_300.0, 430_406.0, 4_150_507.0)
    centre = rasterize_mask([rect], grid)
    touched = rasterize_mask([rect], grid, all_touched=True)
    assert centre.dtype == np.uint8 and set(np.unique(centre)) == {0, 1}
    assert abs(centre.sum() * 100 - rect.area) <= rect.length * 10 / 2
    assert touched.sum() >= centre.sum()
    assert touched.sum() * 100 >= rect.area
    # a farm cut by the grid edge: only the part on the grid is drawn
    cut = box(430_900.0, 4_150_000.0, 431_300.0, 4_150_200.0)
    assert rasterize_mask([cut], grid).sum() == 10 * 20


def test_extract_without_solar_features_and_bad_files(tmp_path: Path) -> None:
    b = OsmBuilder()
    b.way(
        1,
        [(430_000, 4_150_000), (430_100, 4_150_000), (430_100, 4_150_100), (430_000, 4_150_000)],
        {"building": "yes"},
    )
    extract = read_extract(b.write_osm(tmp_path / "none.osm"))
    assert extract.features == []
    with pytest.raises(LabelsError, match="does not exist"):
        read_extract(tmp_path / "missing.osm.pbf")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(LabelsError, match="unknown suffix"):
        read_extract(tmp_path / "x.txt")
    bad = tmp_path / "bad.osm"
    bad.write_text("<osm><way id='1'><nd ref='1'/>")
    with pytest.raises(LabelsError, match="osmium could not read"):
        read_extract(bad)
    with pytest.raises(LabelsError, match="malformed"):
        parse_json('{"elements": 3}')
    with pytest.raises(LabelsError, match="malformed"):
        parse_xml("<html>busy</html>")


def test_overlap_of_generators_is_not_counted_twice() -> None:
    plant = box(0, 0, 0.004, 0.003)
    inside = box(0.001, 0.001, 0.002, 0.002)
    straddling = box(0.0035, 0.001, 0.0045, 0.002)  # 50 % inside the plant
    result = build_farms(
        [
            OsmFeature("way", 1, PLANT, plant),
            OsmFeature("way", 2, GENERATOR, inside),
            OsmFeature("way", 3, GENERATOR, straddling),
        ],
        FarmRules(),
    )
    (farm,) = result.farms.itertuples()
    assert farm.n_generators_merged == 2
    union = shapely.union_all([plant, straddling])
    assert farm.area_m2 == pytest.approx(area_m2(union), rel=1e-9)


def test_block_aligned_plan_keeps_patches_inside_blocks(demo_osm) -> None:
    _, path = demo_osm
    farms = build_farms(read_extract(path).features, FarmRules()).farms
    aoi = box(*farms.total_bounds).buffer(0.05)
    params = PlanParams(block_m=2560.0, negatives_per_positive=1.0, negative_buffer_m=300)
    plan = plan_patches(farms, aoi, params, seed=0)
    assert plan.counts["farms_not_fully_covered"] == 0
    assert plan.counts["farms_across_blocks"] >= 1  # w800 (3 km) cannot fit in one block
    for row in plan.patches.itertuples():  # block side = patch side: patches ARE blocks
        assert row.x0 % 2560 == 0 and row.y0 % 2560 == 0
    corners = list(zip(plan.patches["x0"], plan.patches["y0"], strict=True))
    assert len(set(corners)) == len(corners)  # lattice patches: equal or disjoint, never both
    w800 = plan.patches[plan.patches["farm_ids"].str.contains("w800")]
    assert len(w800) >= 2
    free = plan_patches(farms, aoi, PlanParams(block_m=None), seed=0).patches
    assert not (free["x0"] % 2560 == 0).all()  # free placement: random offsets
