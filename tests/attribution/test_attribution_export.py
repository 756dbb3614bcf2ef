"""Attribution COGs keep the patch grid, band names and provenance; stitching; farm masses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from shapely.geometry import box

from pipeline.attribution.export import ATTRIBUTION_BANDS, attribution_tags, write_attribution
from pipeline.attribution.methods import explain
from pipeline.attribution.objects import polygon_target, region_mass, ring_mask
from pipeline.attribution.quicklook import write_quicklook
from pipeline.attribution.stitch import hann_window, stitch, union_grid
from pipeline.attribution.targets import Target
from pipeline.config.attribute import AttributeConfig
from pipeline.errors import AttributionError, GeoMismatchError
from pipeline.geo.raster import Grid


def test_cog_keeps_grid_bands_tags_nodata(tmp_path, tiny_model, tiny_input, utm_grid) -> None:
    grid = Grid(utm_grid.crs, utm_grid.transform, 16, 16)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[2:6, 2:9] = True
    res = explain(
        "integrated_gradients",
        tiny_model,
        tiny_input,
        Target("label_farms", "w7", mask),
        AttributeConfig(ig_steps=16),
        seed=5,
    )
    valid = np.ones((16, 16), bool)
    valid[0, 0] = False
    tags = attribution_tags(
        res,
        patch_id="p00001",
        model_sha256="ab" * 32,
        stac_item_ids=["S2A_1", "S2B_2"],
        gap_tolerance=0.01,
    )
    path = write_attribution(tmp_path / "a.tif", res, grid, tags=tags, valid=valid)
    with rasterio.open(path) as src:
        assert src.crs == grid.crs and src.transform == grid.transform
        assert (src.height, src.width) == (16, 16) and src.dtypes[0] == "float32"
        assert src.descriptions == ATTRIBUTION_BANDS and np.isnan(src.nodata)
        t = src.tags()
        data = src.read()
    assert t["method"] == "integrated_gradients" and t["target"] == "label_farms"
    assert t["target_id"] == "w7" and t["baseline"] == "zeros" and t["model_sha256"] == "ab" * 32
    assert json.loads(t["stac_item_ids"]) == ["S2A_1", "S2B_2"]
    assert json.loads(t["method_params"])["steps"] == 16
    assert float(t["completeness_gap"]) == pytest.approx(res.completeness_gap)
    assert float(t["score"]) == res.score and t["gap_flag"] in ("true", "false")
    assert np.isnan(data[:, 0, 0]).all()
    np.testing.assert_array_equal(data[:10, 1:, :], res.values.numpy()[:, 1:, :])
    np.testing.assert_array_equal(data[10, 5], res.aggregate.numpy()[5])


def test_polygon_targets_and_region_mass(utm_grid) -> None:
    x0, y0 = utm_grid.transform.c, utm_grid.transform.f
    farm = box(x0 + 100, y0 - 200, x0 + 200, y0 - 100)  # 10 x 10 pixels
    target = polygon_target("label_farms", "w1", farm, utm_grid)
    assert int(target.mask.sum()) == 100 and bool(target.mask[10:20, 10:20].all())
    ring = ring_mask(farm, utm_grid, 20.0)
    assert not (ring & target.mask.numpy()).any() and ring.sum() == 196 - 100 - 4  # round corners
    agg = np.zeros((64, 64))
    agg[target.mask.numpy()] = 1.0
    agg[ring] = -0.5
    agg[60, 60] = 2.0
    values = np.zeros((10, 64, 64))
    values[3][target.mask.numpy()] = 1.0
    values[7][target.mask.numpy()] = -3.0
    mass = region_mass(values, agg, target.mask.numpy(), ring, tuple(f"b{i}" for i in range(10)))
    assert (mass.inside, mass.ring, mass.outside) == (100.0, -46.0, 2.0)
    assert mass.share_inside == pytest.approx(100 / 148) and mass.top_bands[:2] == ("b7", "b3")
    outside = box(x0 + 10_000, y0 - 10_000, x0 + 10_100, y0 - 9_900)
    with pytest.raises(AttributionError, match="outside the patch"):
        polygon_target("missed_farms", "m1", outside, utm_grid)


def test_stitch_blends_overlaps_and_keeps_single_coverage(utm_grid) -> None:
    t = utm_grid.transform
    g1 = Grid(utm_grid.crs, t, 8, 8)
    g2 = Grid(utm_grid.crs, Affine(10, 0, t.c + 40, 0, -10, t.f), 8, 8)  # 4 px to the east
    a1, a2 = np.full((1, 8, 8), 1.0), np.full((1, 8, 8), 3.0)
    mosaic, out = stitch([a1, a2], [g1, g2])
    assert out.shape == (8, 12) and out.transform == t
    assert (mosaic[0, :, :4] == 1.0).all() and (mosaic[0, :, 8:] == 3.0).all()
    w1, w2 = hann_window(8, 8)[0, 4:], hann_window(8, 8)[0, :4]
    np.testing.assert_allclose(mosaic[0, 0, 4:8], (w1 * 1 + w2 * 3) / (w1 + w2), rtol=1e-6)
    with pytest.raises(GeoMismatchError, match="pixel lattice"):
        stitch([a1], [Grid(utm_grid.crs, Affine(10, 0, t.c + 5, 0, -10, t.f), 8, 8)], out)
    with pytest.raises(GeoMismatchError, match="one UTM zone"):
        union_grid([g1, Grid(rasterio.crs.CRS.from_epsg(32617), t, 8, 8)])


def test_quicklook_png(tmp_path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(100, 3000, size=(3, 32, 32)).astype(np.uint16)
    agg = rng.normal(size=(32, 32))
    mask = np.zeros((32, 32), bool)
    mask[5:10, 5:12] = True
    path = write_quicklook(tmp_path / "q.png", rgb, agg, signed=True, mask=mask, title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
