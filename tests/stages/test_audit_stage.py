"""The audit stage on a miniature attributed run (real COGs, GeoPackages, a tiny smp U-Net)."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from support.audit import build_run

from pipeline.audit.patches import analyst_on_grid
from pipeline.errors import AuditError, MissingArtifactError
from pipeline.stages import audit


def _flags(paths) -> pd.DataFrame:
    return pd.read_csv(paths.flags, dtype={"target_id": str})


def test_snow_reliance_is_flagged_uniform_is_not(audited) -> None:
    _, paths = audited
    flags = _flags(paths).set_index(["target_id", "cue"])
    w1, w2 = flags.loc[("w1", "snow")], flags.loc[("w2", "snow")]
    assert w1["verdict"] in ("confirmed", "unconfirmed") and w1["enrichment"] > 5
    assert w1["ci_low"] <= w1["enrichment"] <= w1["ci_high"]
    assert w1["swir_share"] > 0.3  # the stand-in maps put most snow attribution on B11
    assert w2["verdict"] == "not_flagged" and w2["enrichment"] == pytest.approx(1.0, abs=0.05)
    # the counterfactual ran (scope "all") and replaced exactly the snow block
    assert w1["cf_status"] == "ok" and w1["n_replaced"] == 24 * 16
    assert abs(w1["prob_change"]) <= 1 and 0 <= w1["mask_iou"] <= 1
    assert flags.loc[("w1", "water"), "verdict"] == "cue_absent"


def test_cues_reliance_and_gpkg(audited) -> None:
    _, paths = audited
    cues = pd.read_csv(paths.cues).set_index(["patch_id", "cue"])
    assert cues.loc[("p0", "snow"), "source"] == "scl"
    assert cues.loc[("p1", "snow"), "source"] == "ndsi"  # no SCL: the spectral test
    assert cues.loc[("p1", "snow"), "pixel_share"] == pytest.approx(24 * 16 / 64**2)
    reliance = pd.read_csv(paths.reliance)
    assert len(reliance) == 8 * 3  # 8 attribution rasters x 3 cues
    gdf = gpd.read_file(paths.flags_gpkg, layer="flags")  # one row per farm, a group per cue
    assert gdf.crs.to_epsg() == 4326 and len(gdf) == 2 and gdf.geometry.notna().all()
    assert {"snow_verdict", "snow_enrichment", "cloud_confirmed"} <= set(gdf.columns)
    assert gdf.set_index("target_id").loc["w2", "verdict"] == "not_flagged"
    run_flags = pd.read_csv(paths.run_flags)
    assert {"ci_low", "ci_high", "enrichment"} <= set(run_flags.columns)


def test_sanity_and_faithfulness_outputs(audited) -> None:
    _, paths = audited
    sanity = json.loads(paths.sanity.read_text())
    mr = sanity["model_randomization"]
    assert len(mr["steps"]) == 2 and set(mr["methods"]) == {"saliency", "guided_backprop"}
    for v in mr["methods"].values():
        assert len(v["spearman"]) == 2 and all(-1 <= r <= 1 for r in v["spearman"])
    assert set(sanity["data_randomization"]["methods"]) == {"saliency", "guided_backprop"}
    faith = pd.read_csv(paths.faithfulness)
    assert faith["status"].eq("ok").all()
    assert faith["deletion_auc"].between(0, 1).all() and faith["insertion_auc"].between(0, 1).all()
    assert np.isfinite(faith["infidelity"]).all()


def test_no_attributions_is_a_clear_error(tmp_path) -> None:
    cfg, paths = build_run(tmp_path)
    index = pd.read_csv(paths.attribution_index)
    index["status"] = "skipped"
    index.to_csv(paths.attribution_index, index=False)
    with pytest.raises(AuditError, match=r"no attributions to audit.*make attribute"):
        audit.run(cfg, paths)
    paths.attribution_index.unlink()
    with pytest.raises(MissingArtifactError, match="make attribute"):
        audit.run(cfg, paths)


def test_analyst_cues_on_the_grid(tmp_path) -> None:
    from support.audit import SNOW, grid

    from pipeline.geo.raster import write_cog

    g = grid(0)
    left, top = g.transform @ (SNOW[1].start, SNOW[0].start)
    right, bottom = g.transform @ (SNOW[1].stop, SNOW[0].stop)
    from shapely.geometry import box

    gdf = gpd.GeoDataFrame(geometry=[box(left, bottom, right, top)], crs=g.crs).to_crs(4326)
    mask = analyst_on_grid(gdf, g)
    assert int(mask.sum()) == 24 * 16 and mask[SNOW].all()
    raster = np.zeros((1, 64, 64), np.uint8)
    raster[0][SNOW] = 1
    path = write_cog(tmp_path / "cue.tif", raster, g, band_names=["cue"], nodata=None)
    assert np.array_equal(analyst_on_grid(path, g), raster[0].astype(bool))
    assert "no CRS" in analyst_on_grid(gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)]), g)


def test_a_missing_patch_is_named_from_the_dask_worker(tmp_path) -> None:
    cfg, paths = build_run(tmp_path, overrides=("compute.workers=1",))
    paths.image("p1").unlink()
    with pytest.raises(MissingArtifactError, match=r"patch p1 not found.*make fetch"):
        audit.run(cfg, paths)
