"""The audit's pieces for Dask and mapped farms: per-patch scans merge as one pass would
have gathered them; flags.gpkg carries a mapped farm's relation to the labels."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import box

from pipeline.audit.cues import CueMask
from pipeline.audit.flags import write_flags_gpkg
from pipeline.audit.patches import read_mapped_relations
from pipeline.audit.reliance import CueReliance, TargetStats, UnitSums
from pipeline.audit.scan import Scan
from pipeline.paths import RunPaths


def _result(k: float) -> CueReliance:
    units = UnitSums(k, 2 * k, 3 * k, 1, 2)
    return CueReliance(units, [units], {"swir": k}, flagged=False)


def test_scans_of_patches_merge_like_one_pass() -> None:
    key = ("label_farms", "w1", "saliency", "snow")
    cue = CueMask("snow", np.ones((2, 2), bool), "scl")
    absent = CueMask("snow", None, "scl", "no SCL and no B11")
    one = TargetStats()
    for pid, c, r in (("p0", cue, _result(1.0)), ("p1", absent, None), ("p2", cue, _result(2.0))):
        one.record(pid, c, r)
    parts = []
    for pid, c, r in (("p0", cue, _result(1.0)), ("p1", absent, None), ("p2", cue, _result(2.0))):
        part = Scan(cues=[{"patch_id": pid}])
        part.stats.setdefault(key, TargetStats()).record(pid, c, r)
        part.skipped[f"x{pid}"] += 1
        parts.append(part)
    merged = Scan()
    for part in parts:
        merged.merge(part)
    assert merged.stats[key] == one
    assert not merged.stats[key].computable and merged.stats[key].reason == "no SCL and no B11"
    assert [c["patch_id"] for c in merged.cues] == ["p0", "p1", "p2"]
    assert sum(merged.skipped.values()) == 3


def test_flags_gpkg_names_each_mapped_farms_relation(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path, "r")
    paths.map_farms.parent.mkdir(parents=True)
    gpd.GeoDataFrame(
        {"farm_id": ["m0001", "m0002"], "in_osm": [True, False], "osm_id": ["way/7", None]},
        geometry=[box(0, 0, 1, 1), box(2, 2, 3, 3)],
        crs=4326,
    ).to_file(paths.map_farms, layer="farms", driver="GPKG")
    relations = read_mapped_relations(paths)
    assert relations[("mapped_farms", "m0001")] == {"in_osm": True, "osm_id": "way/7"}
    farms = pd.DataFrame(
        {
            "target": ["label_farms", "mapped_farms", "mapped_farms"],
            "target_id": ["w1", "m0001", "m0002"],
        }
    )
    polygons = {("mapped_farms", "m0001"): box(0, 0, 1, 1), ("label_farms", "w1"): box(5, 5, 6, 6)}
    out = write_flags_gpkg(tmp_path / "flags.gpkg", farms, polygons, relations)
    table = gpd.read_file(out, layer="flags").set_index("target_id")
    assert table.loc["m0001", "in_osm"] == "true" and table.loc["m0001", "osm_id"] == "way/7"
    assert table.loc["m0002", "in_osm"] == "false" and not table.loc["m0002", "osm_id"]
    assert not table.loc["w1", "in_osm"]  # not a mapped farm: no relation
    # without mapped farms the table keeps its columns
    plain = write_flags_gpkg(tmp_path / "plain.gpkg", farms.head(1), polygons, relations)
    assert "in_osm" not in gpd.read_file(plain, layer="flags").columns
