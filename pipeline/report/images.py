"""Pictures for the report, as PNG bytes and ``data:`` URIs (no files, no network).

Arrays in, bytes out: RGB composites of stored-DN patches, mask overlays, attribution maps
with a colour bar scale chosen per map, and matplotlib plots.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from PIL import Image

#: Overlay colours (RGB 0-255) of masks and cues.
COLOURS: dict[str, tuple[int, int, int]] = {
    "label": (255, 215, 0),
    "prediction": (255, 0, 255),
    "snow": (0, 255, 255),
    "cloud": (200, 200, 200),
    "water": (30, 90, 255),
}


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(rgb: np.ndarray, size: int) -> bytes:
    img = Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    if max(img.size) != size:
        img = img.resize((size, size), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def rgb_composite(image: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """``(H, W, 3)`` uint8 true colour (B04, B03, B02), each band stretched 2-98 % per patch.

    A stretch per band removes the haze that lifts blue in top-of-atmosphere-like scenes (one
    joint stretch tints everything purple).

    Args:
        image: ``(C, H, W)`` stored DN; 0 is nodata (shown black).
        bands: Band names of ``image``; missing visible bands render grey.
    """
    chans = []
    for name in ("B04", "B03", "B02"):
        if name in bands:
            chans.append(image[list(bands).index(name)].astype(np.float32))
        else:
            chans.append(np.full(image.shape[1:], np.nan, np.float32))
    stack = np.stack(chans, axis=-1)
    valid = np.isfinite(stack) & (stack > 0)
    out = np.zeros_like(stack)
    for i in range(3):
        ok = valid[..., i]
        lo, hi = np.percentile(stack[..., i][ok], [2, 98]) if ok.any() else (0.0, 1.0)
        out[..., i] = np.clip((stack[..., i] - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    out[~valid] = 0
    out[np.isnan(stack).all(axis=-1)] = 128
    return out.astype(np.uint8)


def overlay(
    rgb: np.ndarray, masks: Mapping[str, np.ndarray | None], alpha: float = 0.55
) -> np.ndarray:
    """Blend coloured ``masks`` (name -> ``(H, W)`` bool) over ``rgb`` ``(H, W, 3)`` uint8."""
    out = rgb.astype(np.float32)
    for name, mask in masks.items():
        if mask is None or not mask.any():
            continue
        colour = np.array(COLOURS.get(name, (255, 80, 0)), np.float32)
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
    return out.astype(np.uint8)


def attribution_rgb(values: np.ndarray) -> tuple[np.ndarray, float]:
    """``(H, W)`` map -> ``(H, W, 3)`` uint8 and its symmetric scale.

    Signed maps use a diverging colormap centred on 0 (RdBu_r); non-negative ones ``magma``.
    The scale is the 99th percentile of ``|values|`` (NaN shown black).
    """
    v = np.nan_to_num(values.astype(np.float32), nan=0.0)
    scale = float(np.percentile(np.abs(v), 99)) or float(np.abs(v).max()) or 1.0
    if (v < 0).any():
        norm = np.clip(v / scale, -1, 1) * 0.5 + 0.5
        cmap = colormaps["RdBu_r"]
    else:
        norm = np.clip(v / scale, 0, 1)
        cmap = colormaps["magma"]
    rgb = (cmap(norm)[..., :3] * 255).astype(np.uint8)
    rgb[np.isnan(values)] = 0
    return rgb, scale


def png(rgb: np.ndarray, size: int = 160) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` uint8 image scaled (nearest) to ``size`` pixels square."""
    return _png(rgb, size)


def _figure_png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
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
    return _figure_png(fig)


def line_plot(
    series: Mapping[str, Sequence[float]],
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
    return _figure_png(fig)
