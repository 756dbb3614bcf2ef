"""Enrichment on constructed maps, bootstrap CIs, band shares, flags and verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.audit import flags as flg
from pipeline.audit import reliance as rel
from pipeline.bands import BANDS
from pipeline.errors import AuditError

H = W = 64


def _masks() -> tuple[np.ndarray, np.ndarray]:
    farm = np.zeros((H, W), bool)
    farm[20:40, 5:20] = True
    snow = np.zeros((H, W), bool)
    snow[10:50, 40:56] = True
    region = rel.outside_region(farm, np.ones((H, W), bool), buffer_px=2)
    return snow, region


def test_attribution_on_snow_is_enriched_uniform_is_not() -> None:
    snow, region = _masks()
    area = (snow & region).sum() / region.sum()
    uniform = rel.reliance(np.ones((H, W)), snow, region)
    assert uniform.enrichment == pytest.approx(1.0)
    assert uniform.area_share == pytest.approx(area)
    on_snow = np.where(snow, 1.0, 0.0)
    concentrated = rel.reliance(on_snow, snow, region)
    assert concentrated.attr_share == pytest.approx(1.0)
    assert concentrated.enrichment == pytest.approx(1 / area)
    # negative attribution is not reliance
    assert rel.reliance(-on_snow, snow, region).effect == 0.0


def test_cue_absent_gives_nan_not_zero() -> None:
    _, region = _masks()
    r = rel.reliance(np.ones((H, W)), np.zeros((H, W), bool), region)
    assert np.isnan(r.enrichment) and r.area_share == 0.0


def test_outside_region_excludes_farm_and_buffer() -> None:
    farm = np.zeros((10, 10), bool)
    farm[5, 5] = True
    region = rel.outside_region(farm, np.ones((10, 10), bool), buffer_px=1)
    # a radius-1 disc: the farm pixel and its 4 neighbours; diagonals and beyond stay
    assert not region[5, 5] and not region[4, 5] and region[3, 5] and region[4, 4]
    assert int(region.sum()) == 100 - 5
    assert rel.buffer_pixels(20.0, 10.0) == 2 and rel.buffer_pixels(0.0, 10.0) == 0


def test_bootstrap_ci_contains_estimate_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    snow, region = _masks()
    units = []
    for _ in range(12):
        attr = rng.uniform(0, 1, (H, W)) + np.where(snow, rng.uniform(1, 3), 0)
        units.append(rel.unit_sums(attr, snow, region))
    point = rel.pooled(units).enrichment
    lo, hi = rel.bootstrap_enrichment(units, n_boot=500, level=0.95, seed=3)
    assert lo <= point <= hi and lo < hi
    assert rel.bootstrap_enrichment(units, n_boot=500, level=0.95, seed=3) == (lo, hi)
    assert rel.bootstrap_enrichment(units, n_boot=500, level=0.95, seed=4) != (lo, hi)
    assert all(np.isnan(rel.bootstrap_enrichment(units[:1], n_boot=10, level=0.9, seed=0)))


def test_block_sums_add_up_to_the_patch() -> None:
    snow, region = _masks()
    attr = np.random.default_rng(1).uniform(0, 1, (H, W))
    blocks = rel.block_sums(attr, snow, region, 16)
    assert len(blocks) == 16
    whole = rel.unit_sums(attr, snow, region)
    assert sum(b.attr_cue for b in blocks) == pytest.approx(whole.attr_cue)
    assert sum(b.n_region for b in blocks) == whole.n_region


def test_swir_share_on_cue() -> None:
    values = np.zeros((len(BANDS), 4, 4), np.float32)
    values[BANDS.index("B11")] = 3.0
    values[BANDS.index("B03")] = -1.0
    shares = rel.band_shares(values, BANDS, np.ones((4, 4), bool))
    assert shares["swir"] == pytest.approx(0.75) and shares["visible"] == pytest.approx(0.25)


def test_flag_rules_and_verdicts() -> None:
    assert flg.is_flagged(3.0, 0.2, threshold=2.0, min_effect=0.05)
    assert not flg.is_flagged(3.0, 0.01, threshold=2.0, min_effect=0.05)  # tiny effect
    assert not flg.is_flagged(float("nan"), 0.2, threshold=2.0, min_effect=0.05)
    v = flg.verdict
    assert v(computable=False, cue_present=False, flagged=False, moved=None) == "not_computable"
    assert v(computable=True, cue_present=False, flagged=False, moved=None) == "cue_absent"
    assert v(computable=True, cue_present=True, flagged=True, moved=True) == "confirmed"
    assert v(computable=True, cue_present=True, flagged=True, moved=False) == "unconfirmed"
    with pytest.raises(AuditError, match=r"min_effect = 1\.5"):
        flg.check_thresholds(2.0, 1.5, 0.1)
    with pytest.raises(AuditError, match="enrichment_threshold = -1"):
        flg.check_thresholds(-1, 0.1, 0.1)


def test_run_summary_fractions_over_present_cues() -> None:
    flags = pd.DataFrame(
        {"cue": ["snow"] * 4, "verdict": ["confirmed", "unconfirmed", "not_flagged", "cue_absent"]}
    )
    s = flg.run_summary(flags)["snow"]
    assert s["cue_present"] == 3 and s["flagged"] == 2 and s["confirmed"] == 1
    assert s["confirmed_fraction"] == pytest.approx(1 / 3)
