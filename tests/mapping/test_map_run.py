"""The map on real local Dask clusters: values, seams, zones, clouds, determinism, re-runs."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
import torch
from shapely.geometry import box
from support.mapping import (
    CLOUD_A,
    EPSG,
    FARMS,
    FILLED_CHUNK,
    GAP_CHUNK,
    World,
    load_pixel_model,
    main_scenes,
    run_map,
    write_catalog,
)

from pipeline.bands import BANDS
from pipeline.errors import MapError
from pipeline.geo.raster import Grid, write_cog
from pipeline.mapping.grid import Chunk
from pipeline.model.window import Predictor, WindowSpec, predict_raster
from pipeline.net import RetryPolicy
from pipeline.stac.assets import signer_for
from pipeline.stac.patch import PatchSpec, ReadSettings, fetch_patch
from pipeline.stac.source import ItemQuery, StaticCatalogSource

#: The same config for every run compared byte for byte (its digest is in the mosaics' tags).
PATCHES = {"farm_patches": True}


@pytest.fixture(scope="module")
def two(world: World, client2: Any) -> tuple[Any, dict]:
    """The main world mapped by two workers (with farm patches)."""
    return run_map(world, "two", client2, map_section=PATCHES)


def test_one_two_and_a_killed_worker_give_identical_maps(
    world: World, two: tuple[Any, dict], client1: Any, client2: Any
) -> None:
    one, _ = run_map(world, "one", client1, map_section=PATCHES)
    killed: list[int] = []

    def kill_one(result: Any, report: Any) -> None:
        if not killed:  # after the first chunk finished: kill a worker; its nanny restarts it
            pid = sorted(client2.run(os.getpid).values())[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    crashed, summary = run_map(world, "killed", client2, on_result=kill_one, map_section=PATCHES)
    assert killed and summary["chunks"]["failed"] == 0
    for paths in (one, crashed):
        for name in (f"probability_{EPSG}.tif", f"provenance_{EPSG}.tif"):
            mine = (paths.stage_dir("map") / name).read_bytes()
            assert mine == (two[0].stage_dir("map") / name).read_bytes(), name
        farms = gpd.read_file(paths.map_farms)
        ref = gpd.read_file(two[0].map_farms)
        assert farms.drop(columns="geometry").equals(ref.drop(columns="geometry"))
        assert farms.geometry.geom_equals_exact(ref.geometry, 1e-9).all()


def test_map_values_equal_the_patch_prediction(world: World, two: tuple[Any, dict]) -> None:
    paths, _ = two
    items = StaticCatalogSource(str(world.catalog)).search(
        ItemQuery(world.area, "sentinel-2-l2a", "2023-07-01/2023-07-31", 100, 10)
    )
    spec = PatchSpec("p", EPSG, 603_520.0, 4_199_900.0, 128, 10.0, world.area)  # across a seam
    settings = ReadSettings(0.5, None, 0.01, 1.0, RetryPolicy(0, 0.01))
    patch = fetch_patch(spec, items, settings, signer_for("static"))
    assert patch.status == "ok" and patch.image is not None
    image = write_cog(paths.root / "patch.tif", patch.image, spec.grid, band_names=BANDS, nodata=0)
    model, meta = load_pixel_model(paths.model)
    predict_raster(
        image,
        paths.root / "patch_prob.tif",
        Predictor(model, meta, torch.device("cpu")),
        WindowSpec(128, 32),
    )
    with rasterio.open(paths.root / "patch_prob.tif") as src:
        expected = src.read(1)
    with rasterio.open(paths.map_probability(EPSG)) as src:
        win = src.window(*spec.grid.bounds)
        got = src.read(1, window=win)
    assert got.shape == expected.shape and np.isfinite(got).all()
    assert (expected >= 0.5).sum() > 100  # the seam farm is in the patch
    # same inputs (see test_map_reads); the 1x1 conv's float32 rounding may differ by one ulp
    # with the batch and tensor shape oneDNN sees, never more
    np.testing.assert_allclose(got, expected, rtol=2e-7 * 4, atol=0)
    np.testing.assert_array_equal(got >= 0.5, expected >= 0.5)


def test_farms_across_a_chunk_seam_are_one_polygon_each(two: tuple[Any, dict]) -> None:
    paths, summary = two
    farms = gpd.read_file(paths.map_farms)
    assert summary["mapped_farms"] == len(farms) == len(FARMS)
    assert farms["in_osm"].all()
    assert set(farms["label_farm_id"]) == set(FARMS)
    for row in farms.itertuples():
        assert row.geometry.geom_type == "Polygon"
        planted = FARMS[row.label_farm_id].area / 1e4
        assert abs(row.area_ha - planted) / planted < 0.1, row
        assert row.label_iou > 0.85
    gaps = gpd.read_file(paths.map_gaps)
    assert list(gaps["chunk_id"]) == [GAP_CHUNK]
    assert gaps["reason"].iloc[0] == "cloudy/missing in all 2 acquisition(s)"


def test_a_cloudy_chunk_is_filled_from_the_other_acquisition(two: tuple[Any, dict]) -> None:
    paths, _ = two
    index = {r["item_ids"]: r["index"] for _, r in _csv(paths.map_acquisitions).iterrows()}
    a, b = index["S2A_T_20230712"], index["S2B_T_20230702"]
    with rasterio.open(paths.map_chunk_provenance(FILLED_CHUNK)) as src:
        prov = src.read(1)
        grid = Grid(src.crs, src.transform, src.height, src.width)
    with rasterio.open(paths.map_chunk(FILLED_CHUNK)) as src:
        prob = src.read(1)
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    x = grid.transform.c + (cols + 0.5) * 10
    y = grid.transform.f - (rows + 0.5) * 10
    minx, miny, maxx, maxy = CLOUD_A.bounds
    under_a = (x > minx + 40) & (x < maxx - 40) & (y > miny + 40) & (y < maxy - 40)
    assert (prov[under_a] == b).all()  # A is cloudy there: B fills
    assert (prov[x > maxx + 40] == a).all()  # A is clear and clearest there
    assert np.isfinite(prob).all()
    with rasterio.open(paths.map_probability(EPSG)) as src:  # the gap stays nodata
        gap = Chunk(EPSG, 1638, 237, 256, 32, 10.0, box(0, 0, 1, 1)).core
        assert np.isnan(src.read(1, window=src.window(*gap.bounds))).all()


def test_farm_patches_hold_the_maps_composite(two: tuple[Any, dict]) -> None:
    paths, summary = two
    index = gpd.read_file(paths.map_patches_index)
    assert summary["farm_patches"] == len(index) == len(FARMS)
    model, meta = load_pixel_model(paths.model)
    predictor = Predictor(model, meta, torch.device("cpu"))
    for row in index.itertuples():
        with rasterio.open(paths.root / row.image) as src:
            assert src.descriptions == BANDS and src.shape == (256, 256)
            image = src.read()
        with rasterio.open(paths.root / row.prob) as src:
            prob = src.read(1)
        with rasterio.open(paths.root / row.mask) as src:
            assert src.read(1).sum() > 0  # the label farm under the mapped farm
        mapped = np.isfinite(prob)
        again = predictor(image[None])[0]  # the per-pixel model on the patch's composite
        np.testing.assert_allclose(again[mapped], prob[mapped], rtol=8e-7, atol=0)


def test_stac_catalog_links_outputs_and_sources(two: tuple[Any, dict]) -> None:
    paths, _ = two
    catalog = pystac.Catalog.from_file(str(paths.map_catalog))
    (item,) = list(catalog.get_items())
    assert item.properties["proj:epsg"] == EPSG
    assert len(item.properties["solarfarm:model_sha256"]) == 64
    sources = {Path(link.href).name for link in item.links if link.rel == "derived_from"}
    assert sources == {"S2A_T_20230712.json", "S2B_T_20230702.json"}
    for key in ("probability", "provenance", "farms", "acquisitions"):
        assert Path(item.assets[key].get_absolute_href() or "").is_file(), key


def test_rerun_reuses_finished_chunks(world: World, two: tuple[Any, dict], client2: Any) -> None:
    paths, first = two
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths.map_chunks_dir.iterdir()}
    _, again = run_map(world, "two", client2, map_section=PATCHES)
    assert again["chunks"]["reused"] == first["chunks"]["done"] == 11
    assert again["chunks"]["done"] == 0 and again["block_tasks"] < first["block_tasks"]
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths.map_chunks_dir.iterdir()}
    assert after == before
    assert again["mapped_farms"] == first["mapped_farms"]


def test_a_farm_across_a_zone_edge_is_one_polygon(zone_world: World, client2: Any) -> None:
    paths, summary = run_map(zone_world, "zones", client2)
    assert summary["zones"] == [32617, 32618]
    farms = gpd.read_file(paths.map_farms)
    assert len(farms) == 1
    farm = farms.iloc[0]
    assert farm["epsg"] == "32617;32618"
    assert farm.geometry.geom_type == "Polygon"
    planted = gpd.GeoSeries([zone_world.farms["across"]], crs=4326).to_crs(32618).area.iloc[0]
    assert abs(farm["area_ha"] * 1e4 - planted) / planted < 0.1
    assert farm["in_osm"]
    for epsg in (32617, 32618):
        assert paths.map_probability(epsg).is_file()


def test_a_corrupt_cog_fails_its_chunks_and_publishes_nothing(
    world: World, client2: Any, tmp_path: Path
) -> None:
    root = tmp_path / "corrupt"
    catalog = write_catalog(root / "stac", main_scenes())
    bad = root / "stac" / "items" / "S2A_T_20230712" / "B04.tif"
    with rasterio.open(bad) as src:  # garble the compressed bytes of the last block
        offset = int(src.get_tag_item("BLOCK_OFFSET_2_1", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_2_1", "TIFF", bidx=1))
    data = bytearray(bad.read_bytes())
    data[offset : offset + size] = bytes(size)
    bad.write_bytes(bytes(data))
    broken = World(root, catalog, world.area, dict(FARMS))
    with pytest.raises(MapError, match=r"B04 of STAC item S2A_T_20230712 at .*B04\.tif") as err:
        run_map(broken, "corrupt", client2)
    assert "re-run `make map`" in str(err.value)
    paths = broken.paths("corrupt")
    assert not paths.map_probability(EPSG).exists() and not paths.map_farms.exists()
    finished = sorted(p.name for p in paths.map_chunks_dir.glob("*_src.tif"))
    assert 0 < len(finished) < 11  # the chunks away from the broken block are kept
    shutil.rmtree(root)


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)
