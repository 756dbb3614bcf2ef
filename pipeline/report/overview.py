"""The report's overview map: the run's area in true colour with the farms on it.

The background is a true-colour mosaic on a lon/lat grid whose pixels are square on the
ground at the area's centre (:func:`overview_grid`): the map stage's low-resolution mosaic when
the run has one, else the fetched patches reprojected and mosaicked (:func:`mosaic`). Farms are
drawn over it by layer (labels, predictions, flagged, confirmed) with a legend, a scale bar in
metres or kilometres and lon/lat on the axes (:func:`overview_png`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import matplotlib

matplotlib.use("Agg")
import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
from affine import Affine
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter
from rasterio.crs import CRS
from rasterio.warp import Resampling, reproject

from pipeline.geo.raster import Grid
from pipeline.report.images import figure_png, stretch

#: Metres per degree of latitude (and of longitude at the equator) on the WGS84 sphere.
METRES_PER_DEGREE = 111_320.0


def overview_grid(bounds: tuple[float, float, float, float], width_px: int = 1000) -> Grid:
    """A lon/lat (EPSG:4326) grid over ``bounds`` ``(west, south, east, north)``, ``width_px``
    wide, its pixels square on the ground at the centre latitude."""
    west, south, east, north = bounds
    dx = (east - west) / width_px
    dy = dx * math.cos(math.radians((south + north) / 2))
    height = max(1, math.ceil((north - south) / dy))
    return Grid(CRS.from_epsg(4326), Affine(dx, 0, west, 0, -dy, north), height, width_px)


def padded_bounds(
    bounds: Sequence[tuple[float, float, float, float]], pad: float = 0.04
) -> tuple[float, float, float, float]:
    """The union of ``(west, south, east, north)`` boxes, widened by ``pad`` of its size."""
    west = min(b[0] for b in bounds)
    south = min(b[1] for b in bounds)
    east = max(b[2] for b in bounds)
    north = max(b[3] for b in bounds)
    dx, dy = (east - west) * pad or 0.01, (north - south) * pad or 0.01
    return west - dx, south - dy, east + dx, north + dy


def mosaic(sources: Iterable[tuple[np.ndarray, Grid]], out: Grid) -> np.ndarray:
    """Reproject true-colour rasters onto ``out``; the first source to cover a pixel wins.

    Args:
        sources: ``((3, h, w) red, green, blue values, 0 = nodata; their grid)``.
        out: The overview grid.

    Returns:
        ``(3, H, W)`` float32, NaN where no source has data.
    """
    canvas = np.full((3, *out.shape), np.nan, np.float32)
    for array, grid in sources:
        warped = np.full((3, *out.shape), np.nan, np.float32)
        reproject(
            source=array.astype(np.float32),
            destination=warped,
            src_transform=grid.transform,
            src_crs=grid.crs,
            src_nodata=0,
            dst_transform=out.transform,
            dst_crs=out.crs,
            dst_nodata=np.nan,
            resampling=Resampling.average,
        )
        fill = np.isnan(canvas) & np.isfinite(warped)
        canvas[fill] = warped[fill]
    return canvas


def background_rgb(canvas: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 of a :func:`mosaic` (stretched 2-98 % per band; no data light grey)."""
    valid = np.isfinite(canvas).all(axis=0)
    rgb = stretch(np.nan_to_num(canvas), valid)
    rgb[~valid] = (226, 228, 232)
    return rgb


@dataclass(frozen=True)
class Background:
    """The overview's background: ``(H, W, 3)`` uint8 on ``grid`` (EPSG:4326), and its source."""

    rgb: np.ndarray
    grid: Grid
    source: str


@dataclass(frozen=True)
class MapLayer:
    """Polygons (EPSG:4326) drawn in one style, with a legend entry.

    Attributes:
        label: Legend text.
        frame: The polygons.
        edge: Outline colour.
        face: Fill colour (``"none"``: outline only).
        width: Outline width, points.
        style: Line style (``-``, ``--``).
    """

    label: str
    frame: gpd.GeoDataFrame
    edge: str
    face: str = "none"
    width: float = 1.2
    style: Literal["-", "--", ":"] = "-"


@dataclass(frozen=True)
class Mark:
    """A text label at ``(lon, lat)`` (a farm's rank)."""

    lon: float
    lat: float
    text: str


@dataclass(frozen=True)
class Overview:
    """Everything the overview map shows."""

    background: Background
    layers: Sequence[MapLayer]
    marks: Sequence[Mark] = field(default_factory=tuple)


def nice_length(span_m: float) -> float:
    """A round scale-bar length (1, 2 or 5 x 10^k metres) near a fifth of ``span_m``."""
    target = max(span_m / 5, 1.0)
    power = 10 ** math.floor(math.log10(target))
    return max(f * power for f in (1, 2, 5) if f * power <= target)


def _degrees(value: float, positive: str, negative: str) -> str:
    return f"{abs(value):.3f}°{positive if value >= 0 else negative}"


def _scale_bar(ax: plt.Axes, grid: Grid) -> None:
    west, south, east, north = grid.bounds
    lat = (south + north) / 2
    metres_per_lon = METRES_PER_DEGREE * math.cos(math.radians(lat))
    length_m = nice_length((east - west) * metres_per_lon)
    length_deg = length_m / metres_per_lon
    x0 = west + (east - west) * 0.04
    y0 = south + (north - south) * 0.05
    height = (north - south) * 0.012
    text = f"{length_m / 1000:g} km" if length_m >= 1000 else f"{length_m:g} m"
    ax.add_patch(
        Rectangle(
            (x0 - length_deg * 0.08, y0 - height * 1.5),
            length_deg * 1.16,
            height * 6.5,
            facecolor="white",
            alpha=0.8,
            edgecolor="none",
            zorder=5,
        )
    )
    for i in range(2):
        ax.add_patch(
            Rectangle(
                (x0 + i * length_deg / 2, y0),
                length_deg / 2,
                height,
                facecolor="black" if i == 0 else "white",
                edgecolor="black",
                lw=0.8,
                zorder=6,
            )
        )
    ax.text(
        x0 + length_deg / 2, y0 + height * 1.6, text, ha="center", va="bottom", fontsize=9, zorder=6
    )


def overview_png(view: Overview, *, title: str = "") -> bytes:
    """The overview map as PNG (about 1100 px wide): background, farm layers, rank marks,
    legend, scale bar, lon/lat axes."""
    grid = view.background.grid
    west, south, east, north = grid.bounds
    lat = (south + north) / 2
    aspect = 1 / math.cos(math.radians(lat))
    height_in = min(12.0, max(4.0, 10.0 * (north - south) * aspect / max(east - west, 1e-9)))
    fig, ax = plt.subplots(figsize=(11.0, height_in))
    ax.imshow(view.background.rgb, extent=(west, east, south, north), interpolation="bilinear")
    handles: list[Patch | Line2D] = []
    for layer in view.layers:
        if layer.frame.empty:
            continue
        layer.frame.plot(
            ax=ax,
            facecolor=layer.face,
            edgecolor=layer.edge,
            linewidth=layer.width,
            linestyle=layer.style,
            zorder=3,
        )
        handles.append(
            Patch(
                facecolor=layer.face,
                edgecolor=layer.edge,
                linewidth=layer.width,
                linestyle=layer.style,
                label=f"{layer.label} ({len(layer.frame)})",
            )
        )
    for mark in view.marks:
        ax.annotate(
            mark.text,
            (mark.lon, mark.lat),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
            fontweight="bold",
            color="black",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
            zorder=7,
        )
    ax.set_xlim(west, east)
    ax.set_ylim(south, north)
    ax.set_aspect(aspect)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _degrees(v, "E", "W")))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _degrees(v, "N", "S")))
    ax.tick_params(labelsize=8)
    _scale_bar(ax, grid)
    ax.set_xlabel("longitude", fontsize=9)
    ax.set_ylabel("latitude", fontsize=9)
    if handles:
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=9,
            frameon=False,
            title="farms",
            title_fontsize=9,
        )
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    return figure_png(fig, dpi=100)
