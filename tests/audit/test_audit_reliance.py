"""Enrichment on constructed maps, bootstrap CIs, band shares; rows, pooling per farm and run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.audit.cues import CueMask
from pipeline.audit.reliance import (
    POOLED_COLUMNS,
    TargetStats,
    band_shares,
    block_sums,
    bootstrap_enrichment,
    buffer_pixels,
    farm_level,
    outside_region,
    pooled,
    pooled_row,
    reliance,
    reliance_rows,
    run_level,
    unit_sums,
)
from pipeline.bands import BANDS
from pipeline.config.audit import AuditConfig

H = W = 64


def _masks() -> tuple[np.ndarray, np.ndarray]:
    farm = np.zeros((H, W), bool)
    farm[20:40, 5:20] = True
    snow = np.zeros((H, W), bool)
    snow[10:50, 40:56] = True
    region = outside_region(farm, np.ones((H, W), bool), buffer_px=2)
    return snow, region


def test_attribution_on_snow_is_enriched_uniform_is_not() -> None:
    snow, region = _masks()
    area = (snow & region).sum() / region.sum()
    uniform = reliance(np.ones((H, W)), snow, region)
    assert uniform.enrichment == pytest.approx(1.0)
    assert uniform.area_share == pytest.approx(area)
    on_snow = np.where(snow, 1.0, 0.0)
    concentrated = reliance(on_snow, snow, region)
    assert concentrated.attr_share == pytest.approx(1.0)
    assert concentrated.enrichment == pytest.approx(1 / area)
    # negative attribution is not reliance
    assert reliance(-on_snow, snow, region).effect == 0.0


def test_cue_absent_gives_nan_not_zero() -> None:
    _, region = _masks()
    r = reliance(np.ones((H, W)), np.zeros((H, W), bool), region)
    assert np.isnan(r.enrichment) and r.area_share == 0.0


def test_outside_region_excludes_farm_and_buffer() -> None:
    farm = np.zeros((10, 10), bool)
    farm[5, 5] = True
    region = outside_region(farm, np.ones((10, 10), bool), buffer_px=1)
    # a radius-1 disc: the farm pixel and its 4 neighbours; diagonals and beyond stay
    assert not region[5, 5] and not region[4, 5] and region[3, 5] and region[4, 4]
    assert int(region.sum()) == 100 - 5
    assert buffer_pixels(20.0, 10.0) == 2 and buffer_pixels(0.0, 10.0) == 0


def test_bootstrap_ci_contains_estimate_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    snow, region = _masks()
    units = []
    for _ in range(12):
        attr = rng.uniform(0, 1, (H, W)) + np.where(snow, rng.uniform(1, 3), 0)
        units.append(unit_sums(attr, snow, region))
    point = pooled(units).enrichment
    lo, hi = bootstrap_enrichment(units, n_boot=500, level=0.95, seed=3)
    assert lo <= point <= hi and lo < hi
    assert bootstrap_enrichment(units, n_boot=500, level=0.95, seed=3) == (lo, hi)
    assert bootstrap_enrichment(units, n_boot=500, level=0.95, seed=4) != (lo, hi)
    assert all(np.isnan(bootstrap_enrichment(units[:1], n_boot=10, level=0.9, seed=0)))


def test_block_sums_add_up_to_the_patch() -> None:
    snow, region = _masks()
    attr = np.random.default_rng(1).uniform(0, 1, (H, W))
    blocks = block_sums(attr, snow, region, 16)
    assert len(blocks) == 16
    whole = unit_sums(attr, snow, region)
    assert sum(b.attr_cue for b in blocks) == pytest.approx(whole.attr_cue)
    assert sum(b.n_region for b in blocks) == whole.n_region


def test_swir_share_on_cue() -> None:
    values = np.zeros((len(BANDS), 4, 4), np.float32)
    values[BANDS.index("B11")] = 3.0
    values[BANDS.index("B03")] = -1.0
    shares = band_shares(values, BANDS, np.ones((4, 4), bool))
    assert shares["swir"] == pytest.approx(0.75) and shares["visible"] == pytest.approx(0.25)


def _patch() -> tuple[np.ndarray, np.ndarray, dict[str, CueMask], np.ndarray]:
    """Per-band values (10, H, W) and aggregate (H, W) concentrated on snow; snow, water cues."""
    snow, region = _masks()
    values = np.full((len(BANDS), H, W), 0.1, np.float32)
    values[BANDS.index("B11"), snow] = 3.0
    aggregate = np.abs(values).max(axis=0)
    cues = {
        "snow": CueMask("snow", snow, "scl"),
        "water": CueMask("water", None, "ndwi", "no B08"),
    }
    return values, aggregate, cues, region


def _ident(pid: str, tid: str = "w1") -> dict[str, str]:
    return {"patch_id": pid, "method": "saliency", "target": "label_farms", "target_id": tid}


def test_reliance_rows_measure_each_cue_and_gather_statistics() -> None:
    values, aggregate, cues, region = _patch()
    stats: dict = {}
    audit = AuditConfig(block_px=16)
    rows = reliance_rows(values, aggregate, cues, region, _ident("p0"), audit, stats)
    snow, water = rows
    assert list(snow)[:6] == ["patch_id", "method", "target", "target_id", "cue", "cue_source"]
    assert snow["status"] == "ok" and snow["flagged"] and snow["enrichment"] > 2
    assert snow["cue_pixels"] == int((cues["snow"].mask & region).sum())
    # on snow: B11 3.0, the nine other bands 0.1 each (B12 the other SWIR band)
    assert snow["band_share_swir"] == pytest.approx(3.1 / 3.9, rel=1e-5)
    assert water["status"] == "not_computable" and water["reason"] == "no B08"
    st = stats[("label_farms", "w1", "saliency", "snow")]
    assert st.patches == ["p0"] and len(st.patch_units) == 1 and len(st.block_units) == 16
    assert not stats[("label_farms", "w1", "saliency", "water")].computable


def test_pooled_rows_per_farm_and_per_run() -> None:
    values, aggregate, cues, region = _patch()
    stats: dict = {}
    audit = AuditConfig(block_px=16, bootstrap=200)
    for pid, tid in (("p0", "w1"), ("p1", "w2")):
        reliance_rows(values, aggregate, cues, region, _ident(pid, tid), audit, stats)
    farms = farm_level(stats, {"label_farms"}, audit, seed=0)
    assert [(r["target_id"], r["cue"]) for r in farms] == [
        ("w1", "snow"),
        ("w1", "water"),
        ("w2", "snow"),
        ("w2", "water"),
    ]
    snow = farms[0]
    assert tuple(snow) == POOLED_COLUMNS and snow["flagged"] and snow["cue_present"]
    assert snow["ci_low"] <= snow["enrichment"] <= snow["ci_high"]  # blocks give one-patch CIs
    assert json.loads(snow["patch_ids"]) == ["p0"] and snow["n_patches"] == 1
    water = farms[1]
    assert not water["computable"] and water["reason"] == "no B08" and np.isnan(water["effect"])
    assert farm_level(stats, {"predicted_farms"}, audit, seed=0) == []
    run = run_level(stats, audit, seed=0).set_index("cue")
    assert run.loc["snow", "target_id"] == "*" and run.loc["snow", "n_patches"] == 2
    assert run.loc["snow", "enrichment"] == pytest.approx(snow["enrichment"])
    assert not run.loc["water", "computable"] and np.isnan(run.loc["water", "enrichment"])


def test_pooled_row_is_seeded() -> None:
    values, aggregate, cues, region = _patch()
    stats: dict = {}
    audit = AuditConfig(block_px=16, bootstrap=200)
    reliance_rows(values, aggregate, cues, region, _ident("p0"), audit, stats)
    key = ("label_farms", "w1", "saliency", "snow")
    st: TargetStats = stats[key]
    rows = [pooled_row(key, st, st.block_units, audit, seed) for seed in (0, 0, 1)]
    assert rows[0] == rows[1] and rows[0]["ci_low"] != rows[2]["ci_low"]
