"""How every layer looks: GDAL colour tables and QGIS styles (``.qml``) beside each raster.

QGIS loads ``<name>.qml`` beside ``<name>.tif`` (or ``<name>.vrt``) as the layer's default style,
so an analyst who drags a run's files into QGIS sees true colour, SCL classes, farm masks and
attribution heat maps instead of grey bands. The builders here are pure (arrays in, XML text
out); :func:`write_style` writes one atomically beside its raster.

Values in the styles are in the units QGIS shows: patches carry the band scale 0.0001
(:data:`pipeline.bands.REFLECTANCE_SCALE`), which QGIS applies, so their stretch is in
reflectance; probabilities are 0-1; attributions are in the file's own units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from xml.sax.saxutils import quoteattr

import numpy as np
import rasterio

from pipeline.bands import BANDS, REFLECTANCE_SCALE, SCL_CLASSES
from pipeline.geo.raster import BandEncoding, Grid, read_decimated, write_cog
from pipeline.io import write_text

#: QGIS version the styles are written for (read by QGIS 3.16 and later).
QGIS_VERSION: Final[str] = "3.28"

#: Colour of a farm in masks (RGBA).
FARM_RGBA: Final[tuple[int, int, int, int]] = (255, 215, 0, 255)

#: Mask value that marks "no data" (masks hold 0 = not farm, 1 = farm).
MASK_NODATA: Final[int] = 255

#: The standard colours of the Sen2Cor scene classes (hex), by class value.
SCL_COLOURS: Final[dict[int, str]] = {
    0: "#000000",
    1: "#ff0000",
    2: "#2f2f2f",
    3: "#643200",
    4: "#00a000",
    5: "#ffe65a",
    6: "#0000ff",
    7: "#808080",
    8: "#c0c0c0",
    9: "#ffffff",
    10: "#64c8ff",
    11: "#ff96ff",
}

#: Verdict -> fill colour (hex) in the flags layer (and the report's badges).
VERDICT_COLOURS: Final[dict[str, str]] = {
    "confirmed": "#d7191c",
    "unconfirmed": "#fdae61",
    "not_flagged": "#1a9641",
    "cue_absent": "#a6d96a",
    "not_computable": "#969696",
}

#: Diverging ramp (blue-white-red) of signed maps, from -1 to 1 (the centre is transparent).
DIVERGING: Final[tuple[tuple[float, str, int], ...]] = (
    (-1.0, "#2166ac", 255),
    (-0.5, "#92c5de", 200),
    (0.0, "#f7f7f7", 0),
    (0.5, "#f4a582", 200),
    (1.0, "#b2182b", 255),
)

#: Sequential ramp (magma-like) of magnitudes, from 0 to 1 (0 is transparent).
SEQUENTIAL: Final[tuple[tuple[float, str, int], ...]] = (
    (0.0, "#000004", 0),
    (0.25, "#51127c", 160),
    (0.5, "#b73779", 220),
    (0.75, "#fc8961", 255),
    (1.0, "#fcfdbf", 255),
)

#: Probability ramp (yellow-orange-red), 0 transparent.
PROBABILITY: Final[tuple[tuple[float, str, int], ...]] = (
    (0.0, "#ffffb2", 0),
    (0.5, "#fd8d3c", 180),
    (1.0, "#bd0026", 255),
)


def hex_rgba(colour: str, alpha: int = 255) -> tuple[int, int, int, int]:
    """``"#rrggbb"`` -> ``(r, g, b, alpha)``."""
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16), alpha)


def style_path(raster: str | Path) -> Path:
    """The sidecar QGIS loads as ``raster``'s default style (``p1.tif`` -> ``p1.qml``)."""
    return Path(raster).with_suffix(".qml")


def write_style(raster: str | Path, qml: str) -> Path:
    """Write ``qml`` beside ``raster`` (atomically); returns the ``.qml`` path."""
    return write_text(style_path(raster), qml)


# ---------------------------------------------------------------------------------- GDAL side
def scl_colormap() -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table of an SCL raster (class 0, no data, transparent)."""
    return {v: hex_rgba(c, 0 if v == 0 else 255) for v, c in SCL_COLOURS.items()}


def mask_colormap() -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table of a farm mask: 1 is :data:`FARM_RGBA`.

    GeoTIFF palettes hold no alpha: 0 (not farm) reads back opaque black; the QGIS style
    (:func:`mask_style`) draws it transparent.
    """
    return {0: (0, 0, 0, 0), 1: FARM_RGBA, MASK_NODATA: (0, 0, 0, 0)}


def class_tags(classes: Mapping[int, str]) -> dict[str, str]:
    """Band metadata naming each class (``CLASS_4=vegetation``)."""
    return {f"CLASS_{value}": name for value, name in classes.items()}


#: GDAL encoding of patches: stored DN x 0.0001 = surface reflectance.
PATCH_ENCODING: Final[BandEncoding] = BandEncoding(scale=REFLECTANCE_SCALE, offset=0.0)

#: GDAL encoding of SCL rasters: the class colours and names.
SCL_ENCODING: Final[BandEncoding] = BandEncoding(
    colormap=scl_colormap(), band_tags=class_tags(SCL_CLASSES)
)


def write_patch_cogs(
    image_path: Path,
    scl_path: Path,
    image: np.ndarray,
    scl: np.ndarray,
    grid: Grid,
    tags: Mapping[str, str],
) -> None:
    """A patch's 10-band ``(C, H, W)`` and SCL ``(H, W)`` COGs on ``grid``, each
    with its GDAL encoding (reflectance scale; SCL colour table and class names)."""
    write_cog(
        scl_path,
        scl[None],
        grid,
        band_names=["SCL"],
        nodata=0,
        tags=tags,
        overview_resampling="nearest",
        encoding=SCL_ENCODING,
    )
    write_cog(
        image_path, image, grid, band_names=BANDS, nodata=0, tags=tags, encoding=PATCH_ENCODING
    )


#: GDAL encoding of farm masks (label and predicted): a palette, nodata :data:`MASK_NODATA`.
MASK_ENCODING: Final[BandEncoding] = BandEncoding(
    colormap=mask_colormap(), band_tags=class_tags({0: "not farm", 1: "farm"})
)


# -------------------------------------------------------------------------------- statistics
def cumulative_cut(
    values: np.ndarray, lower: float = 2.0, upper: float = 98.0
) -> tuple[float, float]:
    """``(lower, upper)`` percentiles of the finite, non-zero ``values`` (``(0, 1)`` if none)."""
    v = values[np.isfinite(values) & (values != 0)]
    if not v.size:
        return 0.0, 1.0
    lo, hi = np.percentile(v, [lower, upper])
    return float(lo), float(hi if hi > lo else lo + 1e-6)


def ramp_limit(values: np.ndarray) -> float:
    """Half range of a file's colour ramp: the 99th percentile of ``|values|`` (finite), or the
    largest ``|value|`` when that is 0, or 1 for an empty or all-zero map."""
    v = np.abs(values[np.isfinite(values)])
    if not v.size:
        return 1.0
    limit = float(np.percentile(v, 99)) or float(v.max())
    return limit or 1.0


# ------------------------------------------------------------------------------------- QML
def _document(body: str) -> str:
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        f'<qgis version="{QGIS_VERSION}" styleCategories="Symbology">\n{body}</qgis>\n'
    )


def _raster(renderer: str, attrs: str, inner: str, opacity: float = 1.0) -> str:
    return _document(
        f'  <pipe>\n    <rasterrenderer type="{renderer}" {attrs} opacity="{opacity:g}" '
        f'alphaBand="-1" nodataColor="">\n{inner}    </rasterrenderer>\n  </pipe>\n'
    )


def _enhancement(colour: str, lo: float, hi: float) -> str:
    return (
        f"      <{colour}ContrastEnhancement><minValue>{lo:.6g}</minValue>"
        f"<maxValue>{hi:.6g}</maxValue><algorithm>StretchToMinimumMaximum</algorithm>"
        f"</{colour}ContrastEnhancement>\n"
    )


def truecolour_qml(ranges: Sequence[tuple[float, float]], rgb_bands: Sequence[int]) -> str:
    """Multiband colour style (red, green, blue) with one min-max stretch per band.

    Args:
        ranges: ``(min, max)`` of the red, green and blue bands in the values QGIS shows
            (reflectance for scaled patches), e.g. from :func:`cumulative_cut`.
        rgb_bands: 1-based band numbers shown as red, green, blue (B04, B03, B02: 3, 2, 1).
    """
    red, green, blue = rgb_bands
    origin = (
        "      <minMaxOrigin><limits>CumulativeCut</limits><extent>WholeRaster</extent>"
        "<statAccuracy>Estimated</statAccuracy><cumulativeCutLower>0.02</cumulativeCutLower>"
        "<cumulativeCutUpper>0.98</cumulativeCutUpper><stdDevFactor>2</stdDevFactor>"
        "</minMaxOrigin>\n"
    )
    inner = origin + "".join(
        _enhancement(c, lo, hi)
        for c, (lo, hi) in zip(("red", "green", "blue"), ranges, strict=True)
    )
    attrs = f'redBand="{red}" greenBand="{green}" blueBand="{blue}"'
    return _raster("multibandcolor", attrs, inner)


def paletted_qml(classes: Mapping[int, tuple[str, str, int]], band: int = 1) -> str:
    """Paletted (unique values) style.

    Args:
        classes: Value -> ``(label, "#rrggbb", alpha 0-255)``.
        band: 1-based band number.
    """
    entries = "".join(
        f'        <paletteEntry value="{v}" color="{c}" alpha="{a}" label={quoteattr(label)}/>\n'
        for v, (label, c, a) in sorted(classes.items())
    )
    return _raster(
        "paletted", f'band="{band}"', f"      <colorPalette>\n{entries}      </colorPalette>\n"
    )


@dataclass(frozen=True)
class Stop:
    """One stop of a colour ramp: value, ``#rrggbb`` colour, alpha (0-255)."""

    value: float
    colour: str
    alpha: int = 255


def pseudocolour_qml(band: int, stops: Sequence[Stop], *, opacity: float = 1.0) -> str:
    """Single-band pseudocolour style: colours interpolated between ``stops`` (ascending)."""
    lo, hi = stops[0].value, stops[-1].value
    items = "".join(
        f'            <item alpha="{s.alpha}" value="{s.value:.6g}" label="{s.value:.3g}" '
        f'color="{s.colour}"/>\n'
        for s in stops
    )
    inner = (
        "      <rastershader>\n"
        f'        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0" '
        f'minimumValue="{lo:.6g}" maximumValue="{hi:.6g}">\n{items}'
        "        </colorrampshader>\n      </rastershader>\n"
    )
    attrs = f'band="{band}" classificationMin="{lo:.6g}" classificationMax="{hi:.6g}"'
    return _raster("singlebandpseudocolor", attrs, inner, opacity)


def _scaled(ramp: Sequence[tuple[float, str, int]], factor: float) -> list[Stop]:
    return [Stop(v * factor, c, a) for v, c, a in ramp]


# ------------------------------------------------------------------------- styles per layer
def patch_style(image: np.ndarray, bands: Sequence[str]) -> str:
    """True colour (B04, B03, B02) of a patch, stretched 2-98 % per band over this file.

    Args:
        image: ``(C, H, W)`` stored DN (reflectance x 10000, 0 = nodata).
        bands: Band names of ``image``, in order.
    """
    names = list(bands)
    rgb = [names.index(b) for b in ("B04", "B03", "B02")]
    return truecolour_qml(reflectance_ranges(image[rgb]), [i + 1 for i in rgb])


def reflectance_ranges(rgb: np.ndarray) -> list[tuple[float, float]]:
    """Per band of ``(3, H, W)`` stored DN: its 2-98 % cut, in reflectance."""
    out = []
    for band in rgb.astype(np.float64):
        lo, hi = cumulative_cut(band)
        out.append((lo * REFLECTANCE_SCALE, hi * REFLECTANCE_SCALE))
    return out


def scl_style() -> str:
    """Sen2Cor scene classes with their names and standard colours (no data transparent)."""
    return paletted_qml(
        {v: (SCL_CLASSES[v], c, 0 if v == 0 else 255) for v, c in SCL_COLOURS.items()}
    )


def mask_style(label: str = "farm") -> str:
    """A farm mask: 0 transparent, 1 in :data:`FARM_RGBA`."""
    colour = "#{:02x}{:02x}{:02x}".format(*FARM_RGBA[:3])
    return paletted_qml({0: ("not farm", "#000000", 0), 1: (label, colour, 255)})


def classes_style(labels: Mapping[int, str], *, transparent: Sequence[int] = (0,)) -> str:
    """A paletted style for an index raster (e.g. the map's provenance: acquisition index ->
    its name), one distinct colour per value from a qualitative palette."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    classes = {}
    for i, (value, label) in enumerate(sorted(labels.items())):
        r, g, b, _ = (round(c * 255) for c in cmap(i % 20))
        alpha = 0 if value in transparent else 255
        classes[value] = (label, f"#{r:02x}{g:02x}{b:02x}", alpha)
    return paletted_qml(classes)


def probability_style() -> str:
    """Farm probability 0-1 (yellow to red; 0 transparent)."""
    return pseudocolour_qml(1, _scaled(PROBABILITY, 1.0), opacity=0.8)


def attribution_style(values: np.ndarray, *, signed: bool, band: int) -> str:
    """An attribution map's ramp scaled to this file's values (:func:`ramp_limit`).

    Signed maps get a diverging ramp symmetric about 0 (blue negative, red positive);
    magnitudes a sequential ramp from 0.

    Args:
        values: ``(H, W)`` the band shown (the ``aggregate`` band), NaN = no data.
        signed: Whether the sign means something.
        band: 1-based band number shown.
    """
    limit = ramp_limit(values)
    return pseudocolour_qml(band, _scaled(DIVERGING if signed else SEQUENTIAL, limit), opacity=0.8)


# ------------------------------------------------------------------- styles of written files
def patch_file_style(path: Path) -> str:
    """:func:`patch_style` of a written patch or patch mosaic (read decimated)."""
    with rasterio.open(path) as src:
        names = tuple(d or "" for d in src.descriptions)
    rgb = [names.index(b) + 1 for b in ("B04", "B03", "B02")]
    array, _ = read_decimated(path, rgb)
    return truecolour_qml(reflectance_ranges(array), rgb)


def attribution_file_style(path: Path, *, signed: bool) -> str:
    """:func:`attribution_style` of a written attribution raster or mosaic (its last band,
    ``aggregate``, read decimated)."""
    with rasterio.open(path) as src:
        band = src.count
    array, _ = read_decimated(path, [band])
    return attribution_style(array[0], signed=signed, band=band)


def flags_style(field: str = "verdict") -> str:
    """Categorized polygon style of ``audit/flags.gpkg`` by ``field`` (the farm's verdict)."""
    cats, syms = [], []
    for i, (value, colour) in enumerate(VERDICT_COLOURS.items()):
        cats.append(
            f'      <category render="true" value={quoteattr(value)} symbol="{i}" '
            f"label={quoteattr(value)}/>\n"
        )
        syms.append(
            f'      <symbol type="fill" name="{i}" alpha="0.45" clip_to_extent="1" '
            'force_rhr="0">\n'
            '        <layer class="SimpleFill" enabled="1" pass="0" locked="0">\n'
            '          <Option type="Map">\n'
            f'            <Option type="QString" name="color" value="{colour}"/>\n'
            f'            <Option type="QString" name="outline_color" value="{colour}"/>\n'
            '            <Option type="QString" name="outline_width" value="0.8"/>\n'
            '            <Option type="QString" name="style" value="solid"/>\n'
            "          </Option>\n        </layer>\n      </symbol>\n"
        )
    body = (
        f'  <renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} '
        'symbollevels="0" enableorderby="0" forceraster="0">\n'
        f"    <categories>\n{''.join(cats)}    </categories>\n"
        f"    <symbols>\n{''.join(syms)}    </symbols>\n  </renderer-v2>\n"
    )
    return _document(body)
