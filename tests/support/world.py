"""Small demo worlds for the tests: configs, item pixels, and the planted-rows check."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.bands import BANDS, EARTH_SEARCH_ASSET
from pipeline.config import RunConfig, load_config
from pipeline.demo.render import coverage, panel_rows
from pipeline.demo.source import load_scene

CROP = "[200,200,400,400]"
CROP_TUPLE = (200, 200, 400, 400)
CLEAR = "S2A_18SVG_20160112_0_L2A"
CLOUDY = "S2A_18SVG_20160102_0_L2A"
SNOWFREE = "S2A_18SVG_20160109_0_L2A"
ASSET_KEYS = {*(EARTH_SEARCH_ASSET[b] for b in BANDS), "scl"}
#: configs/demo.yaml turns these on; the tests of the planting itself turn them off.
CHANGES_OFF = (
    "world.snowfree_item=false",
    "world.unmapped_farms=0",
    "world.ghost_labels=0",
    "world.shifted_labels=0",
    "world.history=[]",
)


def small_config(root: Path, *extra: str) -> RunConfig:
    """configs/demo.yaml on a 4 x 4 km crop with four farms, all in training blocks, without
    label errors, snow-free twin or history (:data:`CHANGES_OFF`)."""
    return load_config(
        "configs/demo.yaml",
        [
            f"run.data_root={root}",
            f"world.crop={CROP}",
            "world.n_farms=4",
            "world.farm_area_ha=[2,10]",
            "tiles.split_fractions=[1,0,0]",
            "world.snow_beside_fraction=1.0",
            *CHANGES_OFF,
            *extra,
        ],
    )


def label_error_config(root: Path, *extra: str) -> RunConfig:
    """configs/demo.yaml (twin, history, label errors on) on a 3 x 3 km crop with 8 farms and
    every kind of label error."""
    return load_config(
        "configs/demo.yaml",
        [
            f"run.data_root={root}",
            "world.crop=[200,200,500,500]",
            "world.n_farms=8",
            "world.farm_area_ha=[2,12]",
            "world.unmapped_farms=2",
            "world.ghost_labels=2",
            "world.shifted_labels=1",
            *extra,
        ],
    )


def item_dir(world: Path, item: str) -> Path:
    return world / "stac" / "sentinel-2-l2a" / item


def read_band(world: Path, item: str, name: str) -> np.ndarray:
    """Band (or ``SCL``) ``name`` of ``item`` in the world folder ``world``, as stored."""
    import rasterio

    with rasterio.open(item_dir(world, item) / f"{name}.tif") as src:
        return src.read(1)


def assert_rows_of(
    path: Path,
    item,
    signature,
    cover: float,
    gain: float,
    crop: tuple[int, int, int, int] = CROP_TUPLE,
    item_id: str = CLEAR,
) -> None:
    """The truth row ``item``'s pixels in ``item_id`` are ``signature`` (times ``gain``) laid in
    its panel rows of share ``cover`` over the real ground, as the planting documents."""
    scene = load_scene(None, crop)
    geom = item.geometry
    c = geom.centroid
    rows = panel_rows(c.x, c.y, item.row_azimuth_deg, item.row_pitch_m, cover)
    inside = coverage(geom, scene.grid10)
    panels = coverage(geom, scene.grid10, rows)
    assert inside is not None and panels is not None
    full = inside.fraction == 1.0
    for i, band in enumerate(("B02", "B03", "B04", "B08")):
        ground = scene.bands[band][inside.window][full]
        actual = read_band(path, item_id, band)[inside.window][full] / 1e4
        f = panels.fraction[full]
        expected = ground + f * (signature[BANDS.index(band)] * gain - ground)
        assert np.median(np.abs(actual - expected)) < 0.002, band
        assert np.quantile(np.abs(actual - expected), 0.95) < 0.008, band
        if i == 3:  # NIR: panels are far darker than the winter fields they replace
            assert np.mean(ground - actual) > 0.02
    assert 0.4 < float(np.mean(panels.fraction[full])) / cover < 1.3
    # rows, not an even film: the panel share varies from pixel to pixel
    assert float(np.std(panels.fraction[full])) > 0.005  # an even film gives 0
