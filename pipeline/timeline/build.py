"""The timeline of a map over several windows: read the stacked mosaics, write the tables.

:func:`build_timeline` runs after every window is mapped (:func:`pipeline.mapping.windows.
map_windows`): it builds the sites (:mod:`~pipeline.timeline.sites`), reads each window's
probability mosaic inside each site, tells each site's history
(:mod:`~pipeline.timeline.history`) and the land each new farm replaced
(:mod:`~pipeline.timeline.landcover`), and writes ``site_windows.csv``, ``sites.gpkg``,
``timeline.csv``, ``timeline.png`` and the new columns of ``farms.gpkg``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from shapely.geometry.base import BaseGeometry

from pipeline.geo.crs import to_epsg
from pipeline.geo.masks import rasterize_mask
from pipeline.geo.raster import Grid
from pipeline.io import atomic_path
from pipeline.mapping.composite import clear_mask
from pipeline.mapping.region import write_gpkg
from pipeline.mapping.windows import WindowRun
from pipeline.paths import RunPaths
from pipeline.timeline.history import SiteHistory, WindowStats, site_history, window_stats
from pipeline.timeline.landcover import LandCover, spectral_cover
from pipeline.timeline.sites import Site, build_sites, footprint_pixels
from pipeline.timeline.tables import (
    SITE_COLUMNS,
    SITE_WINDOW_COLUMNS,
    WINDOW_COLUMNS,
    per_window,
    timeline_png,
    window_totals,
)

log = logging.getLogger(__name__)

#: Land cover of a footprint from a land-cover collection: ``(footprint in its zone, zone)``
#: -> the cover, or ``None`` when the collection has nothing there.
Lookup = Callable[[BaseGeometry, int], LandCover | None]


@dataclass(frozen=True)
class TimelineSpec:
    """How windows are read.

    Attributes:
        threshold: Probability of a farm pixel (the map's).
        gsd: Pixel size in metres.
        min_area_m2: A window maps a site as a farm from this area (the map's minimum).
    """

    threshold: float
    gsd: float
    min_area_m2: float


def _frame(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(path) if path.is_file() else gpd.GeoDataFrame(geometry=[], crs=4326)


def _patch_cover(paths: RunPaths, farm_id: str, footprint: BaseGeometry, window: str) -> LandCover:
    """Spectral land cover of ``footprint`` (zone CRS) in a window's patch of ``farm_id``."""
    image_path, scl_path = paths.map_patch(farm_id), paths.map_patch_scl(farm_id)
    if not (farm_id and image_path.is_file() and scl_path.is_file()):
        return LandCover("", 0.0, f"no composite patch of window {window}")
    with rasterio.open(image_path) as src:
        image = src.read()
        grid = Grid(src.crs, src.transform, src.height, src.width)
    with rasterio.open(scl_path) as src:
        scl = src.read(1)
    usable = (rasterize_mask([footprint], grid) > 0) & clear_mask(scl) & (scl != 0)
    return spectral_cover(image, usable, window)


def replaced_land(
    site: Site,
    history: SiteHistory,
    runs: Sequence[WindowRun],
    footprint: BaseGeometry,
    lookup: Lookup | None,
) -> LandCover:
    """The land a new site replaced (see :mod:`pipeline.timeline.landcover`)."""
    if not history.new:
        why = "standing from the first window" if history.construction_window else "never mapped"
        if history.construction_window and history.statuses[0] == "unseen":
            why = "first seen after unseen windows"
        return LandCover("", 0.0, f"not new ({why})")
    if lookup is not None:
        found = lookup(footprint, site.epsg)
        if found is not None:
            return found
    before = next(r for r in runs if r.window.name == history.clear_before)
    return _patch_cover(before.paths, site.farm_id, footprint, history.clear_before)


def _site_row(
    site: Site,
    history: SiteHistory,
    cover: LandCover,
    stats: Sequence[WindowStats],
    names: Sequence[str],
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "site_id": site.site_id,
        "farm_id": site.farm_id,
        "construction_window": history.construction_window,
        "clear_before": history.clear_before,
        "new": history.new,
        "first_area_m2": history.first_area_m2,
        "last_area_m2": history.last_area_m2,
        "extended": history.extended,
        "disappeared": history.disappeared,
        "gone_window": history.gone_window,
        "gone_reason": history.gone_reason,
        "land_cover_before": cover.land_cover,
        "land_cover_share": round(cover.share, 4),
        "land_cover_source": cover.source,
    }
    for name, s, mark in zip(names, stats, history.statuses, strict=True):
        row[per_window("area_m2", name)] = s.area_m2
        row[per_window("status", name)] = mark
    return row


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _expanded(names: Sequence[str]) -> list[str]:
    fixed = [c for c in SITE_COLUMNS if "<window>" not in c]
    return fixed + [per_window(c, n) for c in ("area_m2", "status") for n in names]


def build_timeline(
    runs: Sequence[WindowRun], paths: RunPaths, spec: TimelineSpec, lookup: Lookup | None
) -> tuple[list[Path], dict[str, Any]]:
    """Write the timeline of ``runs`` (earliest first; the last is the run's own ``map/``).

    Returns:
        ``(outputs, summary)``: the files written, and per-window totals with site counts.
    """
    names = [r.window.name for r in runs]
    farms = _frame(paths.map_farms)
    sites = build_sites(farms, [_frame(r.paths.map_farms) for r in runs[:-1]])
    long_rows, site_rows, kept = [], [], []
    for site in sites:
        footprint = to_epsg(site.geometry, site.epsg, max_segment_deg=0)
        stats = [
            window_stats(
                *footprint_pixels(r.paths.map_probability(site.epsg), footprint),
                spec.threshold,
                spec.gsd,
            )
            for r in runs
        ]
        history = site_history(names, stats, spec.min_area_m2, spec.threshold)
        if not history.construction_window and not site.farm_id:
            continue  # an earlier farm's leftover that no window maps as a farm on its own
        kept.append(site)
        cover = replaced_land(site, history, runs, footprint, lookup)
        site_rows.append(_site_row(site, history, cover, stats, names))
        long_rows += [
            {
                "site_id": site.site_id,
                "window": name,
                "status": mark,
                "clear_fraction": round(s.clear_fraction, 4),
                "mean_prob": round(s.mean_prob, 4) if np.isfinite(s.mean_prob) else "",
                "area_m2": s.area_m2,
            }
            for name, s, mark in zip(names, stats, history.statuses, strict=True)
        ]
    columns = _expanded(names)
    frame = pd.DataFrame(site_rows, columns=columns)
    geoms = gpd.GeoSeries([s.geometry for s in kept], crs=4326)
    write_gpkg(gpd.GeoDataFrame(frame, geometry=geoms, crs=4326), paths.map_sites, "sites")
    _write_csv(paths.map_site_windows, long_rows, SITE_WINDOW_COLUMNS)
    windows = [(r.window.name, r.window.datetime, r.acquisitions) for r in runs]
    totals = window_totals(windows, long_rows, site_rows)
    _write_csv(paths.map_timeline, totals, WINDOW_COLUMNS)
    with atomic_path(paths.map_timeline_chart) as tmp:
        tmp.write_bytes(timeline_png(totals))
    extra = frame[frame["farm_id"] != ""].drop(columns=["site_id"])
    merged = farms.merge(extra, on="farm_id", how="left")
    write_gpkg(gpd.GeoDataFrame(merged, geometry="geometry", crs=4326), paths.map_farms, "farms")
    summary = {
        "sites": len(kept),
        "new_farms": int(frame["new"].sum()) if len(frame) else 0,
        "disappeared": int(frame["disappeared"].sum()) if len(frame) else 0,
        "windows": totals,
    }
    outputs = [
        paths.map_sites,
        paths.map_site_windows,
        paths.map_timeline,
        paths.map_timeline_chart,
    ]
    return outputs, summary
