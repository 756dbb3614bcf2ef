"""A site's history from its windows, the windows of the config, and the per-window totals."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from pipeline.config import RunConfig
from pipeline.errors import ConfigError
from pipeline.mapping.windows import DEFAULT_WINDOW, union_interval, windows_of
from pipeline.timeline.history import WindowStats, site_history, statuses, window_stats
from pipeline.timeline.landcover import SPECTRAL_CLASSES, classify, indices, majority
from pipeline.timeline.tables import window_totals

NAMES = ["w0", "w1", "w2", "w3"]
THRESHOLD = 0.5


def stats(clear: float, area: float, prob: float = 0.05) -> WindowStats:
    """Stats of a 100-pixel footprint at 10 m (``area`` in m², 100 m² a pixel)."""
    clear_px = round(clear * 100)
    return WindowStats(clear, clear_px, round(area / 100), area, prob)


FARM, GROUND, GAP = stats(1.0, 8000, 0.9), stats(1.0, 0, 0.02), stats(0.1, 0, float("nan"))


def test_window_stats_counts_the_clear_footprint() -> None:
    prob = np.array([[0.9, 0.8, np.nan], [0.1, 0.7, 0.2]], np.float32)
    inside = np.array([[True, True, True], [True, False, False]])
    s = window_stats(prob, inside, THRESHOLD, 10.0)
    assert s.clear_fraction == pytest.approx(3 / 4)
    assert (s.farm_pixels, s.area_m2) == (2, 200.0)
    assert s.mean_prob == pytest.approx((0.9 + 0.8 + 0.1) / 3)


def test_new_farm_built_after_a_gap_is_dated_by_the_last_clear_window() -> None:
    h = site_history(NAMES, [GROUND, GAP, FARM, FARM], 1000, THRESHOLD)
    assert h.statuses == ("clear", "unseen", "farm", "farm")
    assert (h.construction_window, h.clear_before, h.new) == ("w2", "w0", True)
    assert not h.disappeared and not h.extended


def test_a_farm_seen_first_after_only_gaps_is_not_new() -> None:
    h = site_history(NAMES, [GAP, GAP, FARM, FARM], 1000, THRESHOLD)
    assert (h.construction_window, h.clear_before, h.new) == ("w2", "", False)
    standing = site_history(NAMES, [FARM, FARM, FARM, FARM], 1000, THRESHOLD)
    assert (standing.construction_window, standing.new) == ("w0", False)


def test_growth_and_a_miss_between_farm_windows() -> None:
    half = stats(1.0, 4000, 0.9)
    h = site_history(NAMES, [half, GROUND, FARM, FARM], 1000, THRESHOLD)
    assert h.statuses == ("farm", "missed", "farm", "farm")
    assert h.extended and (h.first_area_m2, h.last_area_m2) == (4000, 8000)
    assert not h.disappeared  # missed once, then back: not gone


def test_disappearance_reason_follows_probability_and_clear_share() -> None:
    gone = site_history(NAMES, [FARM, FARM, GROUND, GROUND], 1000, THRESHOLD)
    assert (gone.disappeared, gone.gone_window, gone.gone_reason) == (True, "w2", "decommissioned")
    faint = stats(1.0, 0, 0.35)  # the model still sees something: a miss is likelier
    assert site_history(NAMES, [FARM, FARM, faint, faint], 1000, THRESHOLD).gone_reason == (
        "model_miss"
    )
    hazy = stats(0.6, 0, 0.02)  # only 60 % clear
    assert site_history(NAMES, [FARM, FARM, hazy, hazy], 1000, THRESHOLD).gone_reason == (
        "model_miss"
    )
    unseen = site_history(NAMES, [FARM, FARM, GAP, GAP], 1000, THRESHOLD)
    assert not unseen.disappeared and unseen.gone_window == ""  # a gap is never "no farm"


def test_small_or_sparse_detections_are_not_farms() -> None:
    tiny = stats(1.0, 300, 0.6)  # below the map's minimum area
    assert statuses([tiny], 1000) == ["clear"]
    sparse = WindowStats(1.0, 1000, 50, 5000.0, 0.1)  # 5 % of the clear footprint
    assert statuses([sparse], 1000) == ["clear"]


def test_spectral_classes_of_known_pixels() -> None:
    #                 B02  B03   B04   B05 B06 B07   B08   B8A   B11   B12
    leaf = np.array([300, 600, 300, 0, 0, 0, 4000, 0, 1500, 0], float)
    field = np.array([600, 900, 1000, 0, 0, 0, 2200, 0, 2000, 0], float)
    soil = np.array([1200, 1500, 2000, 0, 0, 0, 2400, 0, 3500, 0], float)
    water = np.array([800, 900, 500, 0, 0, 0, 300, 0, 100, 0], float)
    image = np.stack([leaf, field, soil, water], axis=1)[:, None, :]  # (10, 1, 4)
    idx = indices(image)
    codes = classify(idx["ndvi"], idx["ndwi"], idx["bsi"])[0]
    assert [SPECTRAL_CLASSES[int(c)] for c in codes] == [
        "vegetation",
        "cropland",
        "bare_soil",
        "water",
    ]
    assert majority(np.array([3, 3, 2, 0]), np.ones(4, bool), SPECTRAL_CLASSES) == (
        "cropland",
        pytest.approx(2 / 3),
    )


def _config(**map_section: object) -> RunConfig:
    return RunConfig.model_validate(
        {
            "run": {"name": "t"},
            "labels": {"source": "file", "osm_file": "x.osm.pbf"},
            "fetch": {
                "catalog": "x/catalog.json",
                "datetime": "2016-01-01/2016-01-31",
                "target_date": "2016-01-12",
            },
            "map": map_section,
        }
    )


def test_windows_default_to_the_one_of_fetch_and_are_ordered() -> None:
    (only,) = windows_of(_config().map, _config().fetch)
    assert (only.name, only.datetime, only.target_date) == (
        DEFAULT_WINDOW,
        "2016-01-01/2016-01-31",
        dt.date(2016, 1, 12),
    )
    cfg = _config(
        windows=[
            {"name": "jan", "datetime": "2016-01-01/2016-01-31"},
            {"name": "jul", "datetime": "2015-07-01/2015-07-31"},
        ]
    )
    got = windows_of(cfg.map, cfg.fetch)
    assert [w.name for w in got] == ["jul", "jan"]
    assert got[0].target_date is None and got[1].target_date == dt.date(2016, 1, 12)
    assert union_interval(got) == "2015-07-01/2016-01-31"


def test_bad_windows_are_one_clear_error() -> None:
    cfg = _config(
        windows=[
            {"name": "a", "datetime": "2015-07-01/2015-10-31"},
            {"name": "b", "datetime": "2015-10-01/2015-12-31"},
        ]
    )
    with pytest.raises(ConfigError, match=r"a .* and b .* overlap; make every window end"):
        windows_of(cfg.map, cfg.fetch)
    with pytest.raises(ValueError, match=r"names .* repeat"):
        _config(
            windows=[
                {"name": "a", "datetime": "2015-01-01"},
                {"name": "a", "datetime": "2016-01-01"},
            ]
        )
    with pytest.raises(ValueError, match=r"map.datetime and map.windows are both set"):
        _config(datetime="2016-01-01/2016-01-31", windows=[{"name": "a", "datetime": "2016-01-02"}])
    with pytest.raises(ValueError, match="'July' is not an ISO date/time"):
        _config(windows=[{"name": "a", "datetime": "July"}])


def test_window_totals() -> None:
    site_windows = [
        {"site_id": "m1", "window": "w0", "status": "farm", "area_m2": 5000.0},
        {"site_id": "m1", "window": "w1", "status": "farm", "area_m2": 7000.0},
        {"site_id": "m2", "window": "w0", "status": "clear", "area_m2": 0.0},
        {"site_id": "m2", "window": "w1", "status": "farm", "area_m2": 3000.0},
        {"site_id": "e1", "window": "w0", "status": "farm", "area_m2": 1000.0},
        {"site_id": "e1", "window": "w1", "status": "unseen", "area_m2": 0.0},
    ]
    sites = [
        {"construction_window": "w0", "new": False, "gone_window": ""},
        {"construction_window": "w1", "new": True, "gone_window": ""},
        {"construction_window": "w0", "new": False, "gone_window": ""},
    ]
    rows = window_totals([("w0", "2015", 1), ("w1", "2016", 2)], site_windows, sites)
    assert [(r["farms"], r["installed_area_ha"], r["new_farms"]) for r in rows] == [
        (2, 0.6, 0),
        (2, 1.0, 1),
    ]
    assert rows[1]["unseen_sites"] == 1
