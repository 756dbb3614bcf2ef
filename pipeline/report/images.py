"""Pictures for the report, as image bytes and ``data:`` URIs (no files, no network).

Arrays in, bytes out: true-colour composites of stored-DN patches, attribution heat maps laid
over them with outlines of the target, the prediction and the cues, colour bars as CSS
gradients, and matplotlib plots.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from PIL import Image
from scipy import ndimage

#: Outline colours (RGB 0-255) of the target, the prediction and the cues.
COLOURS: dict[str, tuple[int, int, int]] = {
    "target": (255, 215, 0),
    "label": (255, 215, 0),
    "prediction": (255, 0, 255),
    "snow": (0, 255, 255),
    "cloud": (235, 235, 235),
    "water": (30, 90, 255),
}

#: Colour maps of signed (diverging, centred on 0) and unsigned (magnitude) attribution maps.
SIGNED_CMAP, MAGNITUDE_CMAP = "RdBu_r", "inferno"


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,...`` for an ``<img src>``."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def encode(rgb: np.ndarray, *, fmt: str = "PNG", quality: int = 88) -> bytes:
    """``(H, W, 3)`` uint8 as PNG or JPEG bytes (JPEG for photographs: a tenth of the size)."""
    buf = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
    if fmt == "JPEG":
        image.save(buf, format="JPEG", quality=quality, optimize=True)
    else:
        image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def jpeg_uri(rgb: np.ndarray) -> str:
    """A ``data:`` URI of ``rgb`` as JPEG."""
    return data_uri(encode(rgb, fmt="JPEG"), "image/jpeg")


def upscale(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of ``(H, W, ...)`` by an integer ``factor``."""
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def stretch(channels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` values -> ``(H, W, 3)`` uint8, each band stretched 2-98 % over ``valid``.

    A stretch per band removes the haze that lifts blue in winter scenes (one joint stretch
    tints everything purple). Pixels outside ``valid`` are black.
    """
    out = np.zeros((*channels.shape[1:], 3), np.float32)
    for i, band in enumerate(channels.astype(np.float32)):
        ok = valid & np.isfinite(band)
        lo, hi = np.percentile(band[ok], [2, 98]) if ok.any() else (0.0, 1.0)
        out[..., i] = np.clip((band - lo) / max(float(hi - lo), 1e-6), 0, 1) * 255
    out[~valid] = 0
    return np.nan_to_num(out).astype(np.uint8)


def rgb_composite(image: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """``(H, W, 3)`` uint8 true colour (B04, B03, B02) of a patch, stretched per band.

    Args:
        image: ``(C, H, W)`` stored DN; 0 is nodata (shown black).
        bands: Band names of ``image``; a missing visible band renders grey.
    """
    names = list(bands)
    if not all(b in names for b in ("B04", "B03", "B02")):
        return np.full((*image.shape[1:], 3), 128, np.uint8)
    rgb = image[[names.index(b) for b in ("B04", "B03", "B02")]]
    return stretch(rgb, np.asarray((rgb > 0).all(axis=0)))


def outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The ``width``-pixel inner boundary of a ``(H, W)`` bool mask."""
    mask = np.asarray(mask, bool)
    return mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=0)


def heat(values: np.ndarray, *, signed: bool, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """An attribution map as colours and opacities for laying over true colour.

    Signed maps use a diverging map centred on 0, magnitudes a sequential one; the opacity
    grows with ``|value| / limit`` so that near-zero attribution leaves the ground visible.

    Args:
        values: ``(H, W)`` attribution (NaN = no data, transparent).
        signed: Whether the sign means something.
        limit: The value at full colour (e.g. the 99th percentile of ``|values|``).

    Returns:
        ``(rgb (H, W, 3) float 0-255, alpha (H, W) float 0-1)``.
    """
    v = np.nan_to_num(values.astype(np.float32), nan=0.0) / max(limit, 1e-12)
    v = np.clip(v, -1, 1) if signed else np.clip(v, 0, 1)
    cmap = colormaps[SIGNED_CMAP if signed else MAGNITUDE_CMAP]
    rgb = cmap(v * 0.5 + 0.5 if signed else v)[..., :3] * 255
    alpha = 0.85 * np.abs(v) ** 0.6
    alpha[~np.isfinite(values)] = 0
    return rgb, alpha


@dataclass(frozen=True)
class Outline:
    """A region to outline on a view: its ``(H, W)`` bool mask and its :data:`COLOURS` key."""

    mask: np.ndarray
    colour: str


def view(
    rgb: np.ndarray,
    *,
    outlines: Sequence[Outline] = (),
    attribution: tuple[np.ndarray, bool, float] | None = None,
    factor: int = 2,
) -> np.ndarray:
    """A card picture: true colour, optionally an attribution heat map over it, outlines on top.

    Args:
        rgb: ``(H, W, 3)`` uint8 true colour.
        outlines: Regions to outline (drawn 2 px wide at the enlarged size, in order).
        attribution: ``(values (H, W), signed, limit)`` to lay over the true colour
            (:func:`heat`), dimming the ground a little so the colours read.
        factor: Enlargement (nearest) so that outlines stay crisp.

    Returns:
        ``(H * factor, W * factor, 3)`` uint8.
    """
    out = rgb.astype(np.float32)
    if attribution is not None:
        values, signed, limit = attribution
        colours, alpha = heat(values, signed=signed, limit=limit)
        out = out * 0.8
        out = out * (1 - alpha[..., None]) + colours * alpha[..., None]
    big = upscale(out, factor)
    for item in outlines:
        if item.mask is None or not item.mask.any():
            continue
        edge = outline(upscale(item.mask, factor), width=2)
        big[edge] = COLOURS.get(item.colour, (255, 80, 0))
    return big.astype(np.uint8)


def colourbar_css(signed: bool, stops: int = 9) -> str:
    """A CSS ``linear-gradient`` of the attribution colour map (left: low, right: high)."""
    cmap = colormaps[SIGNED_CMAP if signed else MAGNITUDE_CMAP]
    colours = []
    for x in np.linspace(0, 1, stops):
        r, g, b, _ = (round(c * 255) for c in cmap(float(x)))
        colours.append(f"rgb({r},{g},{b}) {x * 100:.0f}%")
    return "linear-gradient(to right, " + ", ".join(colours) + ")"


def figure_png(fig: plt.Figure, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib figure (closed afterwards)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def bar_plot(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    ylabel: str,
    line: float | None = None,
) -> bytes:
    """A bar chart (e.g. enrichment per method and cue) with an optional threshold line."""
    fig, ax = plt.subplots(figsize=(6, 3))
    vals = [0.0 if not np.isfinite(v) else v for v in values]
    ax.bar(range(len(vals)), vals, color="#3b6ea5")
    ax.set_xticks(range(len(vals)), list(labels), rotation=30, ha="right", fontsize=8)
    if line is not None:
        ax.axhline(line, color="#c0392b", ls="--", lw=1, label=f"threshold {line:g}")
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=9)
    return figure_png(fig, dpi=90)


def line_plot(
    series: dict[str, Sequence[float]],
    x: Sequence[str] | Sequence[float],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    hline: float | None = None,
) -> bytes:
    """Several named lines over a common ``x`` (e.g. Spearman per cascade step)."""
    fig, ax = plt.subplots(figsize=(6, 3))
    labels = [str(v) for v in x]
    xs = [float(i) for i in range(len(x))] if x and isinstance(x[0], str) else [float(v) for v in x]
    for name, ys in series.items():
        ax.plot(xs, list(ys), marker="o", ms=3, label=name)
    if x and isinstance(x[0], str):
        ax.set_xticks(xs, [v[-24:] for v in labels], rotation=30, ha="right", fontsize=7)
    if hline is not None:
        ax.axhline(hline, color="#c0392b", ls="--", lw=1)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.legend(fontsize=8)
    return figure_png(fig, dpi=90)
