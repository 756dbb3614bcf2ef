"""The timeline scored against a planted history (construction window, area, the removed farm)."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest
from shapely.geometry import box

from pipeline.timeline.truth import score_timeline

WINDOWS = [("w0", "2015-07-01/2015-07-31"), ("w1", "2016-01-01/2016-01-31")]
A, B, R = box(0, 0, 100, 100), box(500, 0, 600, 100), box(1000, 0, 1090, 100)
FP = box(2000, 0, 2100, 100)


def _utm(geoms: list) -> gpd.GeoSeries:
    return gpd.GeoSeries([g.buffer(0) for g in geoms], crs=32618).translate(500_000, 4_170_000)


def test_score_counts_right_windows_area_error_and_the_removed_farm() -> None:
    planted = gpd.GeoDataFrame({"farm_id": ["A", "B", "R"]}, geometry=_utm([A, B, R]))
    history = pd.DataFrame(
        [
            ("A", "2015-07-16", True, 10000.0),
            ("A", "2016-01-12", True, 10000.0),
            ("B", "2015-07-16", False, 0.0),
            ("B", "2016-01-12", True, 10000.0),
            ("R", "2015-07-16", True, 9000.0),
            ("R", "2016-01-12", False, 0.0),
            ("R", "2014-01-01", True, 9000.0),  # outside every window: ignored
        ],
        columns=["farm_id", "date", "present", "area_m2"],
    )
    sites = gpd.GeoDataFrame(
        {
            "site_id": ["sA", "sB", "e1", "sFP"],
            "construction_window": ["w0", "w0", "w0", "w1"],
            "status_w0": ["farm", "farm", "farm", "clear"],
            "status_w1": ["farm", "farm", "clear", "farm"],
            "area_m2_w0": [10000.0, 5000.0, 9000.0, 0.0],
            "area_m2_w1": [11000.0, 10000.0, 0.0, 10000.0],
            "disappeared": [False, False, True, False],
            "gone_reason": ["", "", "decommissioned", ""],
        },
        geometry=_utm([A, B, R, FP]).to_crs(4326),
    )
    score = score_timeline(sites, history, planted, WINDOWS, ["R"])
    assert (score.sites, score.matched, score.construction_right) == (4, 3, 2)
    assert score.construction_share == pytest.approx(2 / 3)
    assert score.wrong == [("sB", "B", "w0", "w1")]
    assert score.area_ha["w0"] == {"mapped": 2.4, "planted": 1.9, "error": pytest.approx(0.2632)}
    assert score.area_ha["w1"] == {"mapped": 2.1, "planted": 2.0, "error": pytest.approx(0.05)}
    assert score.removed == {"R": "disappeared=True reason=decommissioned site=e1"}


def test_visible_area_is_the_planted_part_inside_the_sites() -> None:
    planted = gpd.GeoDataFrame({"farm_id": ["A"]}, geometry=_utm([A]))
    footprints = gpd.GeoDataFrame(
        {
            "farm_id": ["A", "A"],
            "phase": ["first", "full"],
            "first_date": ["2015-07-16", "2016-01-12"],
            "last_date": ["2015-07-16", ""],
        },
        geometry=_utm([box(0, 0, 50, 100), A]),
    )
    history = pd.DataFrame(
        [("A", "2015-07-16", True, 5000.0), ("A", "2016-01-12", True, 10000.0)],
        columns=["farm_id", "date", "present", "area_m2"],
    )
    sites = gpd.GeoDataFrame(  # the model only ever maps the west 80 m of the farm
        {
            "site_id": ["sA"],
            "construction_window": ["w0"],
            "status_w0": ["farm"],
            "status_w1": ["farm"],
            "area_m2_w0": [4000.0],
            "area_m2_w1": [8000.0],
            "disappeared": [False],
            "gone_reason": [""],
        },
        geometry=_utm([box(0, 0, 80, 100)]).to_crs(4326),
    )
    score = score_timeline(sites, history, planted, WINDOWS, [], footprints)
    assert score.area_ha["w0"]["visible"] == pytest.approx(0.5, abs=1e-3)  # first phase: 50 m
    assert score.area_ha["w1"]["visible"] == pytest.approx(0.8, abs=1e-3)
    assert score.area_ha["w1"]["visible_error"] == pytest.approx(0.0, abs=1e-3)
    assert score.area_ha["w1"]["error"] == pytest.approx(0.2)
