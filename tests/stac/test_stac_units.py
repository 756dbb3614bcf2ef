"""Pure pieces of the fetch stage: radiometry rules, asset keys, scene choice, retries."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pystac
import pytest
from pydantic import ValidationError
from support.stac import ES_ITEM, PC_ITEM, c1_template, load_real

from pipeline.bands import BANDS
from pipeline.config import RunConfig
from pipeline.errors import FetchError
from pipeline.net import RetryPolicy, call_with_retries, retry_after_seconds
from pipeline.stac.assets import asset_key, resolve_provider, signer_for
from pipeline.stac.radiometry import apply_offset, double_correction_share, harmonization_for
from pipeline.stac.scene import SceneScreen, choose_scene, scl_fractions
from pipeline.stac.source import in_interval


def test_real_items_rules_and_band_keys() -> None:
    es = pystac.Item.from_dict(load_real(ES_ITEM))
    pc = pystac.Item.from_dict(load_real(PC_ITEM))
    c1 = pystac.Item.from_dict(c1_template())
    assert harmonization_for(es).offset_dn == 0  # its raster:bands offset -0.1 is ignored
    assert harmonization_for(pc).rule == "none:baseline<04.00"  # 02.12
    assert harmonization_for(c1).offset_dn == 1000
    pc.properties["s2:processing_baseline"] = "04.00"
    assert harmonization_for(pc).offset_dn == 1000
    assert [asset_key(es, b) for b in BANDS][:2] == ["blue", "green"]
    assert asset_key(es, "B8A") == "nir08" and asset_key(es, "SCL") == "scl"
    assert [asset_key(pc, b) for b in BANDS] == list(BANDS) and asset_key(pc, "SCL") == "SCL"
    del pc.assets["B11"]
    with pytest.raises(FetchError, match="no asset for band B11"):
        asset_key(pc, "B11")


def test_pc_signer_needs_no_network_off_azure() -> None:
    sign = signer_for("planetary-computer")
    assert sign("http://127.0.0.1:1/files/B02.tif") == "http://127.0.0.1:1/files/B02.tif"
    assert signer_for("earth-search")("s3://x") == "s3://x"
    assert resolve_provider("auto", "https://planetarycomputer.microsoft.com/api/stac/v1") == (
        "planetary-computer"
    )
    assert resolve_provider("auto", "data/worlds/demo/stac/catalog.json") == "static"
    assert resolve_provider("auto", "https://earth-search.aws.element84.com/v1") == "earth-search"


def test_apply_offset_keeps_nodata_and_dark_pixels_apart() -> None:
    dn = np.array([0, 1, 999, 1000, 1001, 5000], dtype=np.uint16)
    assert apply_offset(dn, 1000).tolist() == [0, 1, 1, 1, 1, 4000]
    assert apply_offset(dn, 0).tolist() == dn.tolist()


def test_double_correction_share_flags_dark_vegetation() -> None:
    scl = np.full((4, 4), 4, dtype=np.uint8)
    corrected = np.full((3, 4, 4), 400, dtype=np.uint16)  # blue/green/red of vegetation
    assert double_correction_share(corrected, scl, 1000) == 1.0  # offset again: all <= 0
    assert double_correction_share(corrected + 1000, scl, 1000) == 0.0
    assert double_correction_share(corrected, scl, 0) == 0.0


def test_scl_fractions_count_snow_as_clear() -> None:
    scl = np.array([[4, 11, 9, 0], [3, 10, 5, 11]], dtype=np.uint8)
    clear, snow = scl_fractions(scl)
    assert clear == pytest.approx(4 / 8) and snow == pytest.approx(2 / 8)


def _screen(item_id: str, clear: float, day: int) -> SceneScreen:
    item = pystac.Item(item_id, None, None, datetime(2023, 7, day, tzinfo=UTC), {})
    return SceneScreen(
        (item,), datetime(2023, 7, day, tzinfo=UTC), clear, 0.0, np.zeros((1, 1), np.uint8)
    )


def test_choose_scene_clearest_then_nearest_target() -> None:
    screens = [_screen("a", 0.951, 1), _screen("b", 0.955, 20), _screen("c", 0.70, 10)]
    best, _ = choose_scene(screens, min_clear=0.8, target=date(2023, 7, 2), tie=0.01)
    assert best is not None and best.items[0].id == "a"  # a tie in clear; a is nearer
    best, _ = choose_scene(screens, min_clear=0.8, target=date(2023, 7, 19), tie=0.01)
    assert best is not None and best.items[0].id == "b"
    best, reason = choose_scene(screens, min_clear=0.99, target=None, tie=0.01)
    assert best is None and "best 0.955 in b" in reason
    assert choose_scene([], min_clear=0.5, target=None, tie=0.01)[0] is None


def test_retry_after_and_backoff() -> None:
    assert retry_after_seconds("2") == 2.0
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("Mon, 01 Jan 2024 00:00:05 GMT", now) == 5.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    calls, delays = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("dropped")
        return "ok"

    assert call_with_retries(flaky, RetryPolicy(3, 0.5), what="t", sleep=delays.append) == "ok"
    assert delays == [0.5, 1.0]
    with pytest.raises(ValueError):
        call_with_retries(lambda: int("x"), RetryPolicy(3, 0.1), what="t", sleep=delays.append)


def test_datetime_interval_and_config_validation() -> None:
    when = datetime(2023, 7, 31, 18, tzinfo=UTC)
    assert in_interval(when, "2023-07-01/2023-07-31")
    assert not in_interval(when, "2023-08-01/..")
    assert in_interval(when, None)
    from pipeline.config import load_config

    assert load_config("configs/demo.yaml").fetch.provider == "static"
    with pytest.raises(ValidationError, match=r"fetch\.datetime = 'July'"):
        RunConfig.model_validate(
            {
                "run": {"name": "x"},
                "labels": {"osm_file": "a.pbf"},
                "fetch": {"catalog": "c.json", "datetime": "July"},
            }
        )
