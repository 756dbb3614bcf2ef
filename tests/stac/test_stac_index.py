"""The fetch index rows, the summary and the settings digest's inputs, without a server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from shapely.geometry import box

from pipeline.config import RunConfig
from pipeline.stac.fetch import (
    INDEX_COLUMNS,
    FetchedPatch,
    catalog_stamp,
    error_text,
    index_frame,
    index_row,
    output_settings,
    summarize,
)
from pipeline.stac.patch import PatchSpec

SPEC = PatchSpec("p00003", 32633, 500_000.0, 5_000_000.0, 256, 10.0, box(15, 45, 15.03, 45.02))
TAGS = {
    "item_id": "S2B_33TWG_20230704_0_L2A",
    "datetime": "2023-07-04T10:00:00Z",
    "platform": "sentinel-2b",
    "processing_baseline": "05.09",
    "harmonization": "offset -1000",
    "clear_fraction": "0.97",
    "snow_fraction": "0.01",
    "fetch_digest": "abc",
}


def test_index_rows_of_each_status() -> None:
    ok = index_row(SPEC, "ok", "scene x", ("fetch/patches/p00003.tif", "fetch/x_scl.tif"), TAGS)
    assert list(ok) == [*INDEX_COLUMNS, "geometry"]
    assert ok["image"] == "fetch/patches/p00003.tif" and ok["scl"] == "fetch/x_scl.tif"
    assert ok["clear_fraction"] == 0.97 and ok["snow_fraction"] == 0.01
    assert ok["platform"] == "sentinel-2b" and ok["geometry"] is SPEC.footprint
    failed = index_row(SPEC, "failed", "HTTPError: 503")
    assert failed["image"] is None and failed["item_id"] is None
    assert failed["clear_fraction"] is None and failed["reason"] == "HTTPError: 503"
    frame = index_frame([ok, failed])
    assert tuple(frame.columns) == (*INDEX_COLUMNS, "geometry") and frame.crs.to_epsg() == 4326


def test_summary_counts_statuses_scenes_and_warnings() -> None:
    ok = index_row(SPEC, "ok", "scene", ("a", "b"), TAGS)
    other = PatchSpec("p00004", 32633, 0.0, 0.0, 256, 10.0, box(0, 0, 1, 1))
    reused = index_row(other, "ok", "reused", ("c", "d"), {**TAGS, "snow_fraction": "0.0"})
    cloudy = PatchSpec("p00005", 32633, 0.0, 0.0, 256, 10.0, box(0, 0, 1, 1))
    skipped = index_row(cloudy, "skipped", "cloudy")
    summary = summarize(
        [
            FetchedPatch(ok, ["double correction suspected"]),
            FetchedPatch(reused, [], reused=True),
            FetchedPatch(skipped),
        ],
        "static",
    )
    assert summary["provider"] == "static" and summary["patches"] == 3
    assert (summary["ok"], summary["reused"], summary["skipped"], summary["failed"]) == (2, 1, 1, 0)
    assert summary["skips"] == {"p00005": "cloudy"} and summary["failures"] == {}
    assert summary["warnings"] == ["double correction suspected"]
    assert summary["snow_patches"] == 1 and summary["items_used"] == [TAGS["item_id"]]
    assert summary["harmonization"] == ["offset -1000"]


def test_catalog_stamp_follows_the_catalog_files(tmp_path: Path) -> None:
    catalog = tmp_path / "stac" / "catalog.json"
    catalog.parent.mkdir()
    catalog.write_text("{}")
    (catalog.parent / "item.json").write_text("{}")
    first = catalog_stamp(str(catalog))
    assert first is not None and catalog_stamp(f"file://{catalog}") == first
    os.utime(catalog.parent / "item.json", ns=(1, 1))  # re-planted: same path, other files
    assert catalog_stamp(str(catalog)) != first
    assert catalog_stamp("https://earth-search.aws.element84.com/v1") is None
    assert catalog_stamp(str(tmp_path / "missing.json")) is None


def test_output_settings_leave_out_runtime_fields(tmp_path: Path) -> None:
    def cfg(**fetch: object) -> RunConfig:
        return RunConfig.model_validate(
            {
                "run": {"name": "t", "data_root": str(tmp_path)},
                "labels": {"source": "file", "osm_file": "x.osm.pbf"},
                "fetch": {"catalog": "https://example.org/stac", **fetch},
            }
        )

    base = output_settings(cfg().fetch)
    assert base["catalog_stamp"] is None
    assert output_settings(cfg(workers=3, progress=False).fetch) == base
    assert output_settings(cfg(min_clear_fraction=0.9).fetch) != base


@pytest.mark.parametrize(
    ("err", "text"),
    [
        (OSError("disk full\nmore"), "OSError: disk full"),
        (TimeoutError(), "TimeoutError: "),
    ],
)
def test_error_text_keeps_the_type_and_first_line(err: BaseException, text: str) -> None:
    assert error_text(err) == text
