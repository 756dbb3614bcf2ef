"""The fetch stage end to end against a real loopback STAC API and COG server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
from support.stac import (
    ES_ITEM,
    PC_ITEM,
    X0,
    Y0,
    c1_template,
    collection_doc,
    es_item,
    expected_patch,
    load_real,
    make_config,
    pc_item,
    run_paths,
    scene,
    scene_hrefs,
    write_plan,
)

from pipeline.bands import BANDS
from pipeline.compute import open_client
from pipeline.config.compute import ComputeConfig
from pipeline.errors import FetchError
from pipeline.geo.raster import read_patch, read_raster
from pipeline.geo.styles import style_path
from pipeline.stac.candidates import footprint_candidates, portable
from pipeline.stac.fetch import (
    PatchFetcher,
    fetch_on,
    item_query,
    open_source,
    output_settings,
    read_plan,
    read_settings,
)
from pipeline.stages import fetch
from pipeline.testing.stac_server import ServerProcess

INNER = ("p00000", X0 + 640, Y0 - 640)  # inside every scene
EDGE = ("p00001", X0 + 1280, Y0 - 1280)  # across the west/east boundary (col 256)
JULY = "2023-07-01T10:00:00Z"


def serve(server: ServerProcess, items: list[dict[str, Any]]) -> None:
    cids = {it["collection"] for it in items}
    server.control(
        items=items, collections={c: collection_doc(c) for c in cids}, faults=[], reset=True
    )


def run_fetch(
    tmp: Path,
    server: ServerProcess,
    patches: list[tuple[str, float, float]],
    *,
    compute: dict[str, Any] | None = None,
    **fetch_cfg: Any,
) -> tuple[Any, Any]:
    cfg = make_config(tmp, server.url + "/", compute=compute, **fetch_cfg)
    paths = run_paths(cfg)
    write_plan(paths.plan, patches)
    return fetch.run(cfg, paths), paths


def test_earth_search_item_reads_exact_reflectance(tmp_path: Path, server: ServerProcess) -> None:
    """Real ES item layout, boa offset applied: DN copied; 20 m bands bilinear and exact."""
    template = load_real(ES_ITEM)
    serve(
        server,
        [
            es_item(
                scene("plain"), scene_hrefs(server, "plain"), JULY, datatake="d1", template=template
            )
        ],
    )
    out, paths = run_fetch(tmp_path, server, [INNER])
    assert out.summary["ok"] == 1
    image, grid, tags = read_patch(paths.image("p00000"))
    expected = expected_patch(INNER[1], INNER[2])
    np.testing.assert_array_equal(image.astype(np.int32), expected)
    # a known pixel of a 20 m band (B11) at a known map coordinate: x, y of pixel (10, 20)
    b11 = BANDS.index("B11")
    x, y = grid.transform @ (20 + 0.5, 10 + 0.5)
    i10, j10 = (Y0 - y) // 10, (x - X0) // 10
    assert image[b11, 10, 20] == 1500 + 50 * b11 + 2 * i10 + 2 * j10 - 2 == 2214
    assert grid.crs.to_epsg() == 32618 and grid.transform.c == INNER[1]
    assert tags["harmonization"] == "none:boa_offset_applied"
    assert tags["processing_baseline"] == "05.09"
    assert tags["item_id"] == "ES_plain" and json.loads(tags["stac_item_ids"]) == ["ES_plain"]
    assert tags["scale"] == "0.0001" and "nodata" in tags["dtype"]
    assert float(tags["clear_fraction"]) == 1.0 and float(tags["snow_fraction"]) == 0.0
    scl, _, _ = read_raster(paths.scl("p00000"), expect_bands=["SCL"])
    assert set(np.unique(scl)) == {4, 5}
    index = gpd.read_file(paths.fetch_index, layer="patches")
    assert index.crs.to_epsg() == 4326
    row = index.iloc[0]
    assert (row.status, row.image, row.platform) == (
        "ok",
        "fetch/patches/p00000.tif",
        template["properties"]["platform"],
    )


def test_same_reflectance_whichever_catalog(tmp_path: Path, server: ServerProcess) -> None:
    """ES (offset removed), PC baseline >= 04.00 (+1000 DN), PC 02.12, c1-l2a: one result."""
    pc = load_real(PC_ITEM)
    es = load_real(ES_ITEM)
    c1 = c1_template()
    cases = {
        "es": es_item(
            scene("plain"), scene_hrefs(server, "plain"), JULY, datatake="d", template=es
        ),
        "pc_new": pc_item(
            scene("offset"),
            scene_hrefs(server, "offset"),
            JULY,
            datatake="d",
            template=pc,
            baseline="05.10",
        ),
        "pc_old": pc_item(
            scene("plain"),
            scene_hrefs(server, "plain"),
            JULY,
            datatake="d",
            template=pc,
            baseline=pc["properties"]["s2:processing_baseline"],
        ),
        "c1": es_item(
            scene("offset"),
            scene_hrefs(server, "offset"),
            JULY,
            datatake="d",
            template=c1,
            collection="sentinel-2-c1-l2a",
            baseline="05.11",
        ),
    }
    rules = {}
    images = {}
    for name, item in cases.items():
        serve(server, [item])
        provider = "planetary-computer" if name.startswith("pc") else "earth-search"
        out, paths = run_fetch(
            tmp_path / name, server, [INNER], provider=provider, collection=item["collection"]
        )
        assert out.summary["ok"] == 1, out.summary
        images[name], _, tags = read_patch(paths.image("p00000"))
        rules[name] = tags["harmonization"]
    for name, image in images.items():
        np.testing.assert_array_equal(image, images["es"], err_msg=name)
    np.testing.assert_array_equal(images["es"].astype(np.int32), expected_patch(*INNER[1:]))
    assert rules == {
        "es": "none:boa_offset_applied",
        "pc_new": "subtract_1000:baseline>=04.00",
        "pc_old": "none:baseline<04.00",
        "c1": "subtract_1000:c1_raster_offset",
    }


def test_cloudy_rejected_snow_kept(tmp_path: Path, server: ServerProcess) -> None:
    """A fully cloudy scene loses to a snowy clear one; snow counts as clear, reported apart."""
    serve(
        server,
        [
            es_item(
                scene("cloudy"),
                scene_hrefs(server, "cloudy"),
                "2023-07-05T10:00:00Z",
                datatake="cloudy",
            ),
            es_item(
                scene("snow"), scene_hrefs(server, "snow"), "2023-06-01T10:00:00Z", datatake="snow"
            ),
        ],
    )
    out, paths = run_fetch(tmp_path, server, [INNER], target_date="2023-07-05")
    _, _, tags = read_patch(paths.image("p00000"))
    assert tags["item_id"] == "ES_snow"
    # snow block = upper-left 128 x 128 of the world's 512 x 512; patch rows/cols 64..320
    assert float(tags["snow_fraction"]) == pytest.approx((64 * 64) / 256**2)
    assert float(tags["clear_fraction"]) == 1.0
    scl, _, _ = read_raster(paths.scl("p00000"))
    assert (scl[0, :64, :64] == 11).all() and (scl[0, 64:, :] != 11).all()
    assert out.summary["snow_patches"] == 1


def test_only_cloudy_candidate_is_skipped_with_reason(
    tmp_path: Path, server: ServerProcess
) -> None:
    serve(server, [es_item(scene("cloudy"), scene_hrefs(server, "cloudy"), JULY, datatake="c")])
    out, paths = run_fetch(tmp_path, server, [INNER])
    assert out.summary["skipped"] == 1 and out.summary["ok"] == 0
    assert "best 0.000 in ES_cloudy" in out.summary["skips"]["p00000"]
    assert not paths.image("p00000").exists()
    row = gpd.read_file(paths.fetch_index).iloc[0]
    assert row.status == "skipped" and "clear fraction" in row.reason


def test_patch_across_two_items_of_one_scene_is_mosaicked(
    tmp_path: Path, server: ServerProcess
) -> None:
    serve(
        server,
        [
            es_item(scene("west"), scene_hrefs(server, "west"), JULY, datatake="same"),
            es_item(
                scene("east"), scene_hrefs(server, "east"), "2023-07-01T10:00:05Z", datatake="same"
            ),
        ],
    )
    _, paths = run_fetch(tmp_path, server, [EDGE])
    image, _, tags = read_patch(paths.image("p00001"))
    assert sorted(json.loads(tags["stac_item_ids"])) == ["ES_east", "ES_west"]
    assert float(tags["clear_fraction"]) == 1.0
    assert (image != 0).all()
    expected = expected_patch(*EDGE[1:])
    ten = [i for i, b in enumerate(BANDS) if b in ("B02", "B03", "B04", "B08")]
    np.testing.assert_array_equal(image[ten].astype(np.int32), expected[ten])
    # 20 m bands: exact away from the seam (patch cols 127/128), within 3 DN next to it
    twenty = [i for i in range(len(BANDS)) if i not in ten]
    diff = np.abs(image[twenty].astype(np.int32) - expected[twenty])
    assert diff[:, :, np.r_[0:126, 130:256]].max() == 0
    assert diff.max() <= 3


def test_fault_injection_gives_byte_identical_patches(
    tmp_path: Path, server: ServerProcess
) -> None:
    items = [es_item(scene("plain"), scene_hrefs(server, "plain"), JULY, datatake="d")]
    serve(server, items)
    _, clean = run_fetch(tmp_path / "clean", server, [INNER, EDGE])
    faults = [
        {"match": "/search", "kind": "500", "times": 1},
        {"match": "/search", "kind": "429", "times": 1, "retry_after": 0.3},
        {"match": "/search", "kind": "drop", "times": 1},
        {"match": "plain_B04.tif", "kind": "500", "times": 2},
        {"match": "plain_B11.tif", "kind": "429", "times": 1, "retry_after": 0.2},
        {"match": "plain_SCL.tif", "kind": "drop", "times": 2},
        {"match": "plain_B8A.tif", "kind": "truncate", "times": 2},
    ]
    # new URLs (same files): GDAL's in-process cache must not answer for the server
    hrefs = scene_hrefs(server, "plain", run="faulty")
    serve(server, [es_item(scene("plain"), hrefs, JULY, datatake="d")])
    server.control(faults=faults, reset=True)
    out, faulty = run_fetch(tmp_path / "faulty", server, [INNER, EDGE])
    fired = server.stats()["faults_fired"]
    assert len(fired) == sum(f["times"] for f in faults), fired
    assert out.summary["ok"] == 2
    for pid in ("p00000", "p00001"):
        assert faulty.image(pid).read_bytes() == clean.image(pid).read_bytes()
        assert faulty.scl(pid).read_bytes() == clean.scl(pid).read_bytes()


def test_persistent_failure_is_listed_and_raised_after_the_rest(
    tmp_path: Path, server: ServerProcess
) -> None:
    items = [
        es_item(scene("west"), scene_hrefs(server, "west", run="fail"), JULY, datatake="w"),
        es_item(
            scene("east"),
            scene_hrefs(server, "east", run="fail"),
            "2023-08-01T10:00:00Z",
            datatake="e",
        ),
    ]
    serve(server, items)
    server.control(faults=[{"match": "east_B12.tif", "kind": "500", "times": 1000}])
    west = ("p00002", X0, Y0)  # inside the west item only
    east = ("p00003", X0 + 2560, Y0)  # inside the east item only
    cfg_kw: dict[str, Any] = {"retries": 1, "compute": {"workers": 2}}
    with pytest.raises(FetchError, match=r"1 of 2 patches failed.*p00003"):
        run_fetch(tmp_path, server, [west, east], **cfg_kw)
    paths = run_paths(make_config(tmp_path, server.url))
    index = gpd.read_file(paths.fetch_index).set_index("patch_id")
    assert index.loc["p00002", "status"] == "ok" and paths.image("p00002").is_file()
    assert index.loc["p00003", "status"] == "failed"
    reason = index.loc["p00003", "reason"]  # names the asset and its URL, not "Read failed"
    assert reason.startswith("FetchError: cannot read B12 of ") and "/east_B12.tif" in reason
    assert "after 1 retries" in reason
    summary = json.loads((paths.stage_dir("fetch") / "summary.json").read_text())
    assert list(summary["failures"]) == ["p00003"]
    assert not paths.image("p00003").exists()
    assert not list(paths.image("p00003").parent.glob(".*tmp*"))  # no partial files


def test_stac_api_failing_after_retries_is_one_clear_error_with_a_summary(
    tmp_path: Path, server: ServerProcess
) -> None:
    serve(server, [es_item(scene("plain"), scene_hrefs(server, "plain"), JULY, datatake="d")])
    server.control(faults=[{"match": "/search", "kind": "500", "times": 1000}])
    with pytest.raises(FetchError, match=r"1 of 1 patches failed") as caught:
        run_fetch(tmp_path, server, [INNER], retries=1, backoff_s=0.01)
    assert f"the STAC API at {server.url}/ failed (HTTP 500) after 1 retries" in str(caught.value)
    paths = run_paths(make_config(tmp_path, server.url))
    summary = json.loads(paths.fetch_summary.read_text())
    assert summary["failed"] == 1 and "STAC API" in summary["failures"]["p00000"]


def test_rerun_reuses_and_config_change_refetches(tmp_path: Path, server: ServerProcess) -> None:
    serve(server, [es_item(scene("plain"), scene_hrefs(server, "plain"), JULY, datatake="d")])
    first, paths = run_fetch(tmp_path, server, [INNER])
    mtime = paths.image("p00000").stat().st_mtime_ns
    again, _ = run_fetch(tmp_path, server, [INNER], workers=1)  # runtime-only change
    assert again.summary["reused"] == 1 and paths.image("p00000").stat().st_mtime_ns == mtime
    changed, _ = run_fetch(tmp_path, server, [INNER], min_clear_fraction=0.6)
    assert changed.summary["reused"] == 0
    assert paths.image("p00000").stat().st_mtime_ns != mtime
    assert first.summary["ok"] == changed.summary["ok"] == 1


def test_static_catalog_in_demo_layout(tmp_path: Path, cog_root: Path) -> None:
    """The demo world's layout: a static catalog, relative hrefs, baseline 02.01, cloudier item."""
    from support.stac import TO_LONLAT, footprint  # noqa: F401 - shared geometry helper

    root = tmp_path / "world" / "stac"
    catalog = pystac.Catalog("demo", "demo world")
    collection = pystac.Collection(
        "sentinel-2-l2a",
        "S2 L2A",
        pystac.Extent(
            pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])
        ),
    )
    catalog.add_child(collection)
    for name, when, cloud in (("plain", "2016-01-12", 5.0), ("cloudy", "2016-01-02", 90.0)):
        geom = footprint(scene(name))
        from shapely.geometry import shape

        item = pystac.Item(
            f"S2A_18SVG_{name}",
            geom,
            list(shape(geom).bounds),
            pystac.utils.str_to_datetime(when + "T15:50:00Z"),
            {
                "platform": "sentinel-2a",
                "eo:cloud_cover": cloud,
                "s2:processing_baseline": "02.01",
                "earthsearch:boa_offset_applied": False,
            },
        )
        collection.add_item(item)
        for band in (*BANDS, "SCL"):
            from pipeline.bands import EARTH_SEARCH_ASSET

            src = cog_root / f"{name}_{band}.tif"
            dst = root / "sentinel-2-l2a" / item.id / f"{band}.tif"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
            item.add_asset(EARTH_SEARCH_ASSET[band], pystac.Asset(f"./{band}.tif"))
    catalog.normalize_hrefs(str(root))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    cfg = make_config(
        tmp_path,
        str(root / "catalog.json"),
        provider="auto",
        datetime="2016-01-01/2016-01-31",
        max_cloud_cover=100,
    )
    paths = run_paths(cfg)
    write_plan(paths.plan, [INNER])
    out = fetch.run(cfg, paths)
    assert out.summary["provider"] == "static" and out.summary["ok"] == 1
    image, _, tags = read_patch(paths.image("p00000"))
    assert tags["item_id"] == "S2A_18SVG_plain"
    assert tags["harmonization"] == "none:baseline<04.00"
    np.testing.assert_array_equal(image.astype(np.int32), expected_patch(*INNER[1:]))
    with rasterio.open(paths.image("p00000")) as src:
        assert src.nodata == 0 and src.dtypes[0] == "uint16" and src.count == 10
        assert src.scales == (0.0001,) * 10 and src.offsets == (0.0,) * 10  # DN -> reflectance
    with rasterio.open(paths.scl("p00000")) as src:
        assert src.colormap(1)[11] == (255, 150, 255, 255) and src.tags(1)["CLASS_11"] == "snow"
    # each raster has its QGIS style beside it, and the zone has one mosaic of each
    for raster in (paths.image("p00000"), paths.scl("p00000")):
        assert style_path(raster).is_file() and str(style_path(raster)) in map(str, out.outputs)
    epsg = 32618
    assert paths.patches_vrt(epsg).is_file() and style_path(paths.patches_vrt(epsg)).is_file()
    with rasterio.open(paths.scl_vrt(epsg)) as vrt, rasterio.open(paths.scl("p00000")) as scl:
        np.testing.assert_array_equal(vrt.read(1), scl.read(1))
    # a rerun reuses the patch; the same catalog rebuilt with other pixels is fetched again
    assert fetch.run(cfg, paths).summary["reused"] == 1
    b02 = root / "sentinel-2-l2a" / "S2A_18SVG_plain" / "B02.tif"
    b02.unlink()
    shutil.copyfile(cog_root / "plain_B02.tif", b02)
    with rasterio.open(b02, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as dst:
        dst.write(dst.read(1) // 2, 1)
    again = fetch.run(cfg, paths)
    assert again.summary["reused"] == 0 and again.summary["ok"] == 1
    halved, _, _ = read_patch(paths.image("p00000"))
    assert halved[0].mean() < 0.75 * image[0].mean()  # B02 now comes from the new file
    np.testing.assert_array_equal(halved[1:], image[1:])


def _four_scenes(server: ServerProcess) -> list[dict[str, Any]]:
    """West (July), east (August), a whole clear scene (September), a whole cloudy one (June)."""
    return [
        es_item(scene("west"), scene_hrefs(server, "west"), JULY, datatake="w"),
        es_item(scene("east"), scene_hrefs(server, "east"), "2023-08-01T10:00:00Z", datatake="e"),
        es_item(scene("plain"), scene_hrefs(server, "plain"), "2023-09-01T10:00:00Z", datatake="p"),
        es_item(
            scene("cloudy"), scene_hrefs(server, "cloudy"), "2023-06-15T10:00:00Z", datatake="c"
        ),
    ]


def test_one_search_for_all_patches_same_patches_as_one_search_each(
    tmp_path: Path, server: ServerProcess
) -> None:
    """Four patches, four items, pages of two: two search requests (one search, two pages),
    not one search per patch; each patch gets the candidates and the bytes it got when it was
    searched on its own; one and two (thread) Dask workers and a worker process write the same
    files."""
    serve(server, _four_scenes(server))
    west, east = ("p00002", X0, Y0), ("p00003", X0 + 2560, Y0)
    patches = [INNER, EDGE, west, east]
    kw = {"page_size": 2, "target_date": "2023-07-01"}
    server.control(reset=True)
    out, paths = run_fetch(tmp_path / "w1", server, patches, **kw)
    assert server.stats()["searches"] == 2  # 4 items / pages of 2, whatever the patch count
    assert out.summary["ok"] == 4
    chosen = {r: read_patch(paths.image(r))[2]["item_id"] for r, *_ in patches}
    assert chosen == {  # every item but the cloudy one is some patch's choice
        "p00000": "ES_plain",
        "p00001": "ES_plain",
        "p00002": "ES_west",
        "p00003": "ES_east",
    }

    # the behaviour before: one search per patch, each patch fetched from its own result
    cfg = make_config(tmp_path / "alone", server.url + "/", **kw)
    alone = run_paths(cfg)
    write_plan(alone.plan, patches)
    fc = cfg.fetch
    source = open_source(fc, "earth-search")
    fetcher = PatchFetcher(fc, read_settings(fc), "earth-search", alone, output_settings(fc))
    specs = read_plan(alone.plan)
    server.control(reset=True)
    own = {s.patch_id: source.search(item_query(fc, s.footprint)) for s in specs}
    assert server.stats()["searches"] >= len(specs)
    picked = footprint_candidates(
        source, item_query(fc, specs[0].footprint), {s.patch_id: s.footprint for s in specs}
    )
    assert {k: [i.id for i in v] for k, v in picked.items()} == {
        k: [i.id for i in v] for k, v in own.items()
    }
    # as on an existing cluster: tasks and their arguments sent to a worker process
    jobs = [(s, [portable(i) for i in own[s.patch_id]]) for s in specs]
    with open_client(ComputeConfig(workers=1)) as client:
        done = fetch_on(client, fetcher, jobs, retries=0)
    assert [p.row["status"] for p in done] == ["ok"] * 4

    _, two = run_fetch(tmp_path / "w2", server, patches, compute={"workers": 2}, **kw)
    for pid, *_ in patches:
        for files in (two, alone):
            assert files.image(pid).read_bytes() == paths.image(pid).read_bytes(), pid
            assert files.scl(pid).read_bytes() == paths.scl(pid).read_bytes(), pid


def test_reused_patches_need_no_search(tmp_path: Path, server: ServerProcess) -> None:
    serve(server, [es_item(scene("plain"), scene_hrefs(server, "plain"), JULY, datatake="d")])
    run_fetch(tmp_path, server, [INNER, EDGE])
    server.control(reset=True)
    again, _ = run_fetch(tmp_path, server, [INNER, EDGE])
    assert again.summary["reused"] == 2 and server.stats()["searches"] == 0


def test_alternates_keep_the_other_clear_acquisitions_beside_the_patch(
    tmp_path: Path, server: ServerProcess
) -> None:
    """fetch.alternates keeps the other clear scenes (not the cloudy one) with their SCL, item
    id and date; the patch itself is the same as without them and is reused afterwards."""
    items = [
        es_item(scene("snow"), scene_hrefs(server, "snow"), "2023-06-01T10:00:00Z", datatake="s"),
        es_item(scene("plain"), scene_hrefs(server, "plain"), JULY, datatake="p"),
        es_item(
            scene("cloudy"), scene_hrefs(server, "cloudy"), "2023-07-05T10:00:00Z", datatake="c"
        ),
    ]
    serve(server, items)
    _, plain_paths = run_fetch(tmp_path / "a", server, [INNER], target_date="2023-06-01")
    out, paths = run_fetch(tmp_path / "b", server, [INNER], target_date="2023-06-01", alternates=2)
    image, _, tags = read_patch(paths.image("p00000"))
    assert tags["item_id"] == "ES_snow"
    assert np.array_equal(image, read_patch(plain_paths.image("p00000"))[0])
    listed = json.loads(paths.alternates_list("p00000").read_text())["alternates"]
    assert [(a["rank"], a["item_id"], a["datetime"]) for a in listed] == [
        (1, "ES_plain", "2023-07-01T10:00:00Z")
    ]
    alt, _, alt_tags = read_patch(paths.alternate_image("p00000", 1))
    np.testing.assert_array_equal(alt, expected_patch(INNER[1], INNER[2]))
    assert alt_tags["item_id"] == "ES_plain"
    alt_scl, _, _ = read_raster(paths.alternate_scl("p00000", 1))
    assert not (alt_scl == 11).any() and alt_scl.min() > 0
    row = gpd.read_file(paths.fetch_index).iloc[0]
    assert json.loads(row.alternates) == ["ES_plain"]
    assert out.summary["patches_with_alternates"] == 1
    assert (
        paths.alternate_image("p00000", 1).as_posix().endswith("fetch/alternates/p00000_alt1.tif")
    )
    again, _ = run_fetch(tmp_path / "b", server, [INNER], target_date="2023-06-01", alternates=2)
    assert again.summary["reused"] == 1
