"""Scene-level mosaics: patch attributions blended onto one larger grid with Hann weights.

Weights come from the prediction stage's window module
(:func:`pipeline.model.window.blend_weights`, a Hann window sampled at pixel centres, positive
everywhere) so patch mosaics blend exactly like sliding-window predictions; non-square patches
use the same formula, ``w(i) = sin^2(pi (i + 0.5) / n)`` per axis.

:func:`stitch_scenes` drives the attribute stage's mosaics: one per method, patch-level target
and CRS, from the index rows of the written rasters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.attribution.export import ATTRIBUTION_BANDS, STD_ERROR_BANDS
from pipeline.attribution.methods import METHODS
from pipeline.errors import GeoMismatchError
from pipeline.geo.raster import Grid, read_raster, union_grid, write_cog
from pipeline.geo.styles import attribution_file_style, attribution_style, write_style
from pipeline.geo.vrt import zone_vrts
from pipeline.paths import RunPaths, safe_name


def hann_window(height: int, width: int) -> np.ndarray:
    """``(height, width)`` float64 separable Hann weights, positive everywhere."""
    if height == width:
        from pipeline.model.window import blend_weights

        return blend_weights(height, "hann")

    def axis(n: int) -> np.ndarray:
        return np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2

    return np.outer(axis(height), axis(width))


def _offset(grid: Grid, out: Grid) -> tuple[int, int]:
    col = (grid.transform.c - out.transform.c) / out.res
    row = (out.transform.f - grid.transform.f) / out.res
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        raise GeoMismatchError(
            f"patch origin ({grid.transform.c}, {grid.transform.f}) is not on "
            f"the output grid's pixel lattice; patches must share alignment"
        )
    return round(row), round(col)


def stitch(
    arrays: Sequence[np.ndarray],
    grids: Sequence[Grid],
    out: Grid | None = None,
    *,
    blend: str = "hann",
) -> tuple[np.ndarray, Grid]:
    """Blend patch rasters ``(B, h, w)`` onto one grid.

    Args:
        arrays: One ``(B, h, w)`` array per patch (NaN = no data, ignored).
        grids: Each patch's grid (same CRS, pixel size, pixel lattice).
        out: The output grid; the union of ``grids`` when ``None``.
        blend: ``hann`` (weights fall to the patch edge) or ``uniform``.

    Returns:
        ``(mosaic (B, H, W) float32 with NaN where no patch has data, out grid)``.

    Raises:
        GeoMismatchError: grids disagree, or a patch falls outside ``out``.
    """
    if len(arrays) != len(grids):
        raise GeoMismatchError(f"{len(arrays)} arrays but {len(grids)} grids")
    out = out or union_grid(grids)
    bands = arrays[0].shape[0]
    total = np.zeros((bands, *out.shape), dtype=np.float64)
    weight = np.zeros((bands, *out.shape), dtype=np.float64)
    for array, grid in zip(arrays, grids, strict=True):
        row, col = _offset(grid, out)
        h, w = array.shape[-2:]
        if row < 0 or col < 0 or row + h > out.height or col + w > out.width:
            raise GeoMismatchError(
                f"a patch at row {row}, col {col} ({h}x{w}) falls outside "
                f"the output grid {out.shape}"
            )
        win = hann_window(h, w) if blend == "hann" else np.ones((h, w))
        ok = np.isfinite(array)
        wts = np.where(ok, win[None], 0.0)
        total[:, row : row + h, col : col + w] += np.where(ok, array, 0.0) * wts
        weight[:, row : row + h, col : col + w] += wts
    with np.errstate(invalid="ignore", divide="ignore"):
        mosaic = np.where(weight > 0, total / weight, np.nan)
    return mosaic.astype(np.float32), out


def scene_groups(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """Run-relative raster paths of explained patch-level targets by ``(method, target)``."""
    groups: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        if row["status"] == "ok" and not row["target_id"]:
            groups.setdefault((row["method"], row["target"]), []).append(row["path"])
    return dict(sorted(groups.items()))


def mosaic_bands(n_bands: int) -> tuple[str, ...]:
    """Band names of a mosaic of ``n_bands`` (standard errors are blended like the values)."""
    return STD_ERROR_BANDS if n_bands == len(STD_ERROR_BANDS) else ATTRIBUTION_BANDS


def by_crs(files: Sequence[Path]) -> dict[str, list[tuple[np.ndarray, Grid]]]:
    """Read rasters and group them by CRS (``EPSG:32633`` style keys), in file order."""
    out: dict[str, list[tuple[np.ndarray, Grid]]] = {}
    for f in files:
        array, grid, _ = read_raster(f)
        out.setdefault(grid.crs.to_string(), []).append((array, grid))
    return out


def stitch_scenes(
    rows: Sequence[Mapping[str, Any]], paths: RunPaths, max_pixels: int
) -> tuple[list[Path], dict[str, str]]:
    """Mosaic the patch-level attributions per (method, target, CRS) with Hann blending.

    Args:
        rows: Index rows (``attribute/index.csv``); ``path`` relative to the run folder.
        paths: The run's paths (mosaics go to :meth:`RunPaths.attribution_scene`).
        max_pixels: A mosaic of more pixels is skipped and its reason returned.

    Returns:
        ``(mosaics written, skip reason by "method/target/CRS")``.

    Raises:
        GeoMismatchError: patches of one CRS do not share a pixel lattice.
    """
    written: list[Path] = []
    notes: dict[str, str] = {}
    for (method, target), rels in scene_groups(rows).items():
        for crs, items in by_crs([paths.resolve(r) for r in rels]).items():
            out = union_grid([g for _, g in items])
            if out.height * out.width > max_pixels:
                notes[f"{method}/{target}/{crs}"] = (
                    f"mosaic of {out.height}x{out.width} exceeds stitch_max_pixels"
                )
                continue
            mosaic, out = stitch([a for a, _ in items], [g for _, g in items], out)
            dest = paths.attribution_scene(method, target, safe_name(crs.replace(":", "")))
            tags = {"method": method, "target": target, "patches": len(items), "blend": "hann"}
            write_cog(
                dest,
                mosaic,
                out,
                band_names=mosaic_bands(len(mosaic)),
                nodata=float("nan"),
                tags=tags,
            )
            signed = METHODS[method].signed if method in METHODS else True
            style = attribution_style(mosaic[-1], signed=signed, band=mosaic.shape[0])
            written += [dest, write_style(dest, style)]
    return written, notes


def attribution_vrts(rows: Sequence[Mapping[str, Any]], paths: RunPaths) -> list[Path]:
    """One VRT per (method, target kind, UTM zone) over the written attribution rasters, each
    with its QGIS style scaled to the mosaic's values (:meth:`RunPaths.attribution_vrt`).

    Args:
        rows: Index rows (``attribute/index.csv``); ``path`` relative to the run folder.
        paths: The run's paths.
    """
    groups: dict[tuple[str, str], list[Path]] = {}
    for row in rows:
        if row["status"] == "ok" and row.get("path"):
            groups.setdefault((row["method"], row["target"]), []).append(paths.resolve(row["path"]))
    written: list[Path] = []
    for (method, target), files in sorted(groups.items()):
        signed = METHODS[method].signed if method in METHODS else True
        written += zone_vrts(
            files,
            partial(paths.attribution_vrt, method, target),
            partial(attribution_file_style, signed=signed),
        )
    return written
