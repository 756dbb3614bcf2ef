"""GDAL encodings read back from real COGs, QGIS styles as XML, zone mosaics (VRT) as rasters."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from pipeline.bands import BANDS
from pipeline.geo.raster import Grid, write_cog
from pipeline.geo.styles import (
    FARM_RGBA,
    MASK_ENCODING,
    MASK_NODATA,
    PATCH_ENCODING,
    SCL_ENCODING,
    attribution_style,
    classes_style,
    mask_style,
    patch_style,
    ramp_limit,
    scl_style,
    style_path,
)
from pipeline.geo.vrt import zone_vrts


def _grid(x0: float, epsg: int = 32618, size: int = 32) -> Grid:
    return Grid(CRS.from_epsg(epsg), Affine(10, 0, x0, 0, -10, 4_170_000), size, size)


def _xml(qml: str) -> ET.Element:
    return ET.fromstring(qml.split("\n", 1)[1])


def test_cogs_keep_scale_colour_table_class_names_and_nodata(tmp_path: Path) -> None:
    image = np.full((len(BANDS), 32, 32), 1200, np.uint16)
    write_cog(
        tmp_path / "p.tif", image, _grid(0), band_names=BANDS, nodata=0, encoding=PATCH_ENCODING
    )
    scl = np.full((1, 32, 32), 11, np.uint8)
    write_cog(
        tmp_path / "s.tif", scl, _grid(0), band_names=["SCL"], nodata=0, encoding=SCL_ENCODING
    )
    mask = np.ones((1, 32, 32), np.uint8)
    write_cog(
        tmp_path / "m.tif",
        mask,
        _grid(0),
        band_names=["farm"],
        nodata=MASK_NODATA,
        encoding=MASK_ENCODING,
    )
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.driver == "GTiff" and src.scales == (0.0001,) * 10 and src.offsets == (0.0,) * 10
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    with rasterio.open(tmp_path / "s.tif") as src:
        assert src.colorinterp[0].name == "palette" and src.colormap(1)[4] == (0, 160, 0, 255)
        assert src.tags(1)["CLASS_11"] == "snow" and src.tags(1)["CLASS_6"] == "water"
    with rasterio.open(tmp_path / "m.tif") as src:
        assert src.nodata == MASK_NODATA and src.colormap(1)[1] == FARM_RGBA


def test_patch_style_is_true_colour_stretched_in_reflectance() -> None:
    image = np.zeros((len(BANDS), 10, 10), np.uint16)
    image[BANDS.index("B04")] = np.arange(1, 101).reshape(10, 10) * 10  # 10..1000 DN
    image[BANDS.index("B03")] = 500
    image[BANDS.index("B02")] = 400
    renderer = _xml(patch_style(image, BANDS)).find(".//rasterrenderer")
    assert renderer.get("type") == "multibandcolor"
    assert (renderer.get("redBand"), renderer.get("greenBand"), renderer.get("blueBand")) == (
        "3",
        "2",
        "1",
    )
    lo = float(renderer.find("redContrastEnhancement/minValue").text)
    hi = float(renderer.find("redContrastEnhancement/maxValue").text)
    expected = np.percentile(np.arange(1, 101) * 10, [2, 98]) * 1e-4
    assert (lo, hi) == pytest.approx(tuple(expected), rel=1e-4)


def test_class_mask_and_attribution_styles() -> None:
    provenance = _xml(classes_style({0: "none", 1: "S2A_...0112", 2: "S2B_...0115"}))
    colours = [(e.get("label"), e.get("alpha")) for e in provenance.findall(".//paletteEntry")]
    assert colours == [("none", "0"), ("S2A_...0112", "255"), ("S2B_...0115", "255")]
    entries = _xml(scl_style()).findall(".//paletteEntry")
    assert {e.get("value"): e.get("label") for e in entries}["11"] == "snow"
    assert [e.get("alpha") for e in _xml(mask_style()).findall(".//paletteEntry")] == ["0", "255"]
    values = np.linspace(-3, 1, 101).reshape(1, 101)
    signed = _xml(attribution_style(values, signed=True, band=11))
    items = signed.findall(".//item")
    limit = ramp_limit(values)
    assert limit == pytest.approx(np.percentile(np.abs(values), 99))
    assert float(items[0].get("value")) == pytest.approx(-limit, rel=1e-4)
    assert float(items[-1].get("value")) == pytest.approx(limit, rel=1e-4)
    assert items[2].get("value") == "0" and items[2].get("alpha") == "0"  # white centre, clear
    assert signed.find(".//rasterrenderer").get("band") == "11"
    magnitude = _xml(attribution_style(np.abs(values), signed=False, band=11)).findall(".//item")
    assert magnitude[0].get("value") == "0"
    assert ramp_limit(np.zeros((3, 3))) == 1.0 and ramp_limit(np.full((2, 2), np.nan)) == 1.0


def test_zone_vrts_mosaic_each_zone_with_relative_sources(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "fetch"
    files = []
    for i, (x0, epsg) in enumerate(((0, 32618), (200, 32618), (0, 32617))):
        data = np.full((len(BANDS), 32, 32), 100 * (i + 1), np.uint16)
        path = folder / "patches" / f"p{i}.tif"
        write_cog(path, data, _grid(x0, epsg), band_names=BANDS, nodata=0, encoding=PATCH_ENCODING)
        files.append(path)
    written = zone_vrts(files, lambda epsg: folder / f"patches_{epsg}.vrt", lambda vrt: scl_style())
    assert [p.name for p in written] == [
        "patches_32617.vrt",
        "patches_32617.qml",
        "patches_32618.vrt",
        "patches_32618.qml",
    ]
    assert str(tmp_path) not in (folder / "patches_32618.vrt").read_text()  # relative paths
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "run", moved)  # the run folder can move
    with rasterio.open(moved / "fetch" / "patches_32618.vrt") as vrt:
        assert vrt.crs.to_epsg() == 32618 and vrt.width == 52 and vrt.height == 32
        assert vrt.descriptions == BANDS and vrt.scales == (0.0001,) * 10 and vrt.nodata == 0
        band = vrt.read(1)
        assert (band[:, :20] == 100).all() and (band[:, 20:] == 200).all()  # later source on top
    assert style_path(written[2]) == written[3]
