"""Farms over time on a real local Dask cluster: four windows of a small synthetic world.

April has no acquisition (every chunk a gap), May is clear (one farm half built, one farm that
is later removed, a cloud over a farm not yet seen), June is all cloud (a gap window), July is
clear with every farm standing. The stand-in model is per pixel, so areas are the planted ones.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
from shapely.geometry import box
from support.mapping import EPSG, HEIGHT, WIDTH, X0, Y0, SceneDef, World, write_catalog

from pipeline.geo.masks import grid_footprint_lonlat
from pipeline.mapping.search import search_area
from pipeline.mapping.windows import map_windows, union_interval, windows_of
from pipeline.report.html import _timeline
from pipeline.report.sections import timeline_view
from pipeline.stac.assets import signer_for
from pipeline.stac.source import ItemQuery, StaticCatalogSource
from pipeline.timeline.build import TimelineSpec, build_timeline
from pipeline.timeline.tables import SITE_COLUMNS, WINDOW_COLUMNS

FULL = {
    "extended": box(603_900, 4_198_800, 604_400, 4_199_300),
    "standing": box(600_800, 4_195_000, 601_100, 4_195_300),
    "late": box(602_500, 4_199_000, 602_800, 4_199_300),
    "clouded": box(606_000, 4_198_200, 606_400, 4_198_600),
}
REMOVED = box(605_000, 4_196_000, 605_300, 4_196_300)
HALF = box(603_900, 4_198_800, 604_160, 4_199_300)  # the extended farm's first phase
WINDOWS = [
    {"name": "apr", "datetime": "2023-04-01/2023-04-30"},
    {"name": "may", "datetime": "2023-05-01/2023-05-31"},
    {"name": "jun", "datetime": "2023-06-01/2023-06-30"},
    {"name": "jul", "datetime": "2023-07-01/2023-07-31"},
]


def _scene(item_id: str, when: str, farms: list, clouds: list) -> SceneDef:
    return SceneDef(
        item_id, when, EPSG, X0, Y0, WIDTH, HEIGHT, datatake=item_id, farms=farms, clouds=clouds
    )


def scenes() -> list[SceneDef]:
    everything = box(X0, Y0 - HEIGHT * 10, X0 + WIDTH * 10, Y0)
    return [
        _scene(
            "S2A_T_20230512",
            "2023-05-12T10:00:00Z",
            [HALF, FULL["standing"], REMOVED, FULL["clouded"]],
            [FULL["clouded"].buffer(200)],
        ),
        _scene("S2A_T_20230611", "2023-06-11T10:00:00Z", list(FULL.values()), [everything]),
        _scene("S2A_T_20230712", "2023-07-12T10:00:00Z", list(FULL.values()), []),
    ]


class CountingSource(StaticCatalogSource):
    """The real static source, counting its searches."""

    searches = 0

    def search(self, query: ItemQuery) -> list[pystac.Item]:
        type(self).searches += 1
        return super().search(query)


@pytest.fixture(scope="module")
def timeline(tmp_path_factory: pytest.TempPathFactory, client2: Any) -> tuple[Any, dict, list]:
    root = tmp_path_factory.mktemp("map-windows")
    area = grid_footprint_lonlat(scenes()[0].grid(10))
    world = World(root, write_catalog(root / "stac", scenes()), area, dict(FULL))
    request, paths = world.request("w", windows=WINDOWS, farm_patches=True)
    cfg = world.config("w", windows=WINDOWS, farm_patches=True)
    windows = windows_of(cfg.map, cfg.fetch)
    source = CountingSource(str(world.catalog))
    items = search_area(source, replace(request.query, datetime=union_interval(windows)))
    labels = gpd.read_file(paths.farms)
    _, summary, runs = map_windows(
        request, windows, items, paths, client2, signer_for("static"), labels
    )
    spec = TimelineSpec(request.settings.threshold, request.gsd, request.rules.min_area_m2)
    _, summary["timeline"] = build_timeline(runs, paths, spec, None)
    return paths, summary, runs


def _sites(paths: Any) -> pd.DataFrame:
    sites = gpd.read_file(paths.map_sites)
    farms = gpd.read_file(paths.map_farms).to_crs(EPSG)
    names = {}
    for fid, geom in zip(farms["farm_id"], farms.geometry, strict=True):
        names[fid] = next((k for k, g in FULL.items() if g.intersects(geom)), fid)
    sites["name"] = [names.get(s, s) for s in sites["site_id"]]
    return sites.set_index("name")


def test_windows_stack_pixel_for_pixel_with_one_search(timeline: tuple) -> None:
    paths, summary, runs = timeline
    assert CountingSource.searches == 1
    assert [r.window.name for r in runs] == ["apr", "may", "jun", "jul"]
    assert runs[-1].paths == paths  # the latest window writes map/ as a one-window map does
    assert paths.map_probability(EPSG).parent == paths.stage_dir("map")
    assert runs[1].paths.map_probability(EPSG).parent == paths.map_windows_dir / "may"
    grids = []
    for run in runs[1:]:
        with rasterio.open(run.paths.map_probability(EPSG)) as src:
            grids.append((src.transform, src.shape, src.crs))
    assert grids[0] == grids[1] == grids[2]
    assert summary["windows"]["apr"]["acquisitions"] == 0


def test_gap_windows_are_listed_gaps_never_no_farm(timeline: tuple) -> None:
    paths, summary, _runs = timeline
    for name in ("apr", "jun"):
        gaps = gpd.read_file(paths.for_map_window(name).map_gaps)
        assert len(gaps) == summary["chunks"]["total"], name  # every chunk of the area
    assert summary["windows"]["jun"]["gaps"] == summary["chunks"]["total"]
    rows = pd.read_csv(paths.map_site_windows)
    assert set(rows.loc[rows["window"].isin(["apr", "jun"]), "status"]) == {"unseen"}
    totals = pd.read_csv(paths.map_timeline)
    assert list(totals.columns) == list(WINDOW_COLUMNS)
    assert totals.set_index("window").loc["jun", "farms"] == 0
    assert totals.set_index("window").loc["jun", "unseen_sites"] == 5


def test_construction_growth_and_removal(timeline: tuple) -> None:
    paths, _, _ = timeline
    sites = _sites(paths)
    assert len(sites) == 5
    late = sites.loc["late"]
    assert (late["construction_window"], late["clear_before"], bool(late["new"])) == (
        "jul",
        "may",
        True,
    )
    clouded = sites.loc["clouded"]  # unseen in April, May (cloud) and June: not called new
    assert (clouded["construction_window"], bool(clouded["new"])) == ("jul", False)
    assert clouded["status_may"] == "unseen"
    extended = sites.loc["extended"]
    assert extended["construction_window"] == "may" and not extended["new"]
    assert bool(extended["extended"])
    ratio = extended["area_m2_may"] / extended["area_m2_jul"]
    assert ratio == pytest.approx(HALF.area / FULL["extended"].area, abs=0.05)
    assert extended["area_m2_jul"] == pytest.approx(FULL["extended"].area, rel=0.05)
    removed = sites.loc["e0001"]
    assert bool(removed["disappeared"]) and removed["gone_window"] == "jul"
    assert removed["gone_reason"] == "decommissioned"
    assert removed["area_m2_may"] == pytest.approx(REMOVED.area, rel=0.05)


def test_land_cover_falls_back_to_spectral_indices(timeline: tuple) -> None:
    paths, _, _ = timeline
    sites = _sites(paths)
    late = sites.loc["late"]
    # the test world's ground: NDVI 0.64, BSI -0.16 (dense vegetation) in the May composite
    assert late["land_cover_before"] == "vegetation"
    assert late["land_cover_source"] == "spectral indices (NDVI, NDWI, BSI) of window may"
    assert late["land_cover_share"] == pytest.approx(1.0)
    assert sites.loc["standing", "land_cover_source"].startswith("not new")


def test_farms_gpkg_gains_the_timeline_columns(timeline: tuple) -> None:
    paths, _, _ = timeline
    farms = gpd.read_file(paths.map_farms)
    assert len(farms) == 4
    for column in ("construction_window", "clear_before", "land_cover_before", "area_m2_may"):
        assert column in farms.columns
    assert "site_id" in SITE_COLUMNS
    assert Path(paths.map_timeline_chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = paths.for_map_window("may").map_patch(str(farms["farm_id"].iloc[0]))
    with rasterio.open(before) as src:  # the before picture, cut around the latest farm
        assert src.count == 10 and np.asarray(src.read(1)).any()


def test_report_shows_the_chart_and_before_after_pictures(timeline: tuple) -> None:
    paths, _, _ = timeline
    view = timeline_view(paths)
    assert view is not None and view.chart is not None
    assert [r["window"] for r in view.rows] == ["apr", "may", "jun", "jul"]
    built = [f for f in view.farms if "built in jul" in f.title]
    assert len(built) == 1 and built[0].before is not None and built[0].after is not None
    assert (built[0].before.caption, built[0].after.caption) == ("before: may", "after: jul")
    assert any(f.title.startswith("site e0001: gone in jul (decommissioned)") for f in view.farms)
    page = _timeline(view)
    assert 'id="timeline-chart"' in page and page.count("<figure>") == 2
