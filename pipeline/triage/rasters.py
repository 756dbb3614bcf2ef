"""What the map's rasters say inside each label: mean probability and the acquisitions.

Reads the map's per-zone probability and provenance COGs (``map/probability_<epsg>.tif``,
``map/provenance_<epsg>.tif``) and ``map/acquisitions.csv`` in a window around each label; a
label in a zone without a map, or outside the mapped area, gets NaN and no dates.
"""

from __future__ import annotations

import csv
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window, from_bounds
from shapely.geometry.base import BaseGeometry

from pipeline.geo.crs import to_epsg, utm_epsg
from pipeline.geo.masks import polygon_mask
from pipeline.geo.raster import Grid
from pipeline.paths import RunPaths


def mean_inside(values: np.ndarray, inside: np.ndarray) -> float:
    """Mean of the finite ``values`` where ``inside`` (NaN when there are none)."""
    picked = values[inside & np.isfinite(values)]
    return float(picked.mean()) if picked.size else float("nan")


def dates_inside(provenance: np.ndarray, inside: np.ndarray, dates: dict[int, str]) -> str:
    """The acquisition dates (``;``-joined, sorted) of the provenance indices where ``inside``
    (0 = none)."""
    found = {dates.get(int(i), "") for i in np.unique(provenance[inside]) if int(i) > 0}
    return ";".join(sorted(d for d in found if d))


def read_dates(path: Path) -> dict[int, str]:
    """Provenance index -> acquisition date (ISO day) from ``acquisitions.csv``."""
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {int(r["index"]): str(r["datetime"])[:10] for r in csv.DictReader(fh)}


def _window(src: rasterio.DatasetReader, geom: BaseGeometry) -> Window | None:
    win = from_bounds(*geom.bounds, transform=src.transform).round_offsets().round_lengths()
    win = win.intersection(Window(0, 0, src.width, src.height)) if win.width > 0 else None
    return win if win is not None and win.width > 0 and win.height > 0 else None


def _one(geom: BaseGeometry, paths: RunPaths, dates: dict[int, str]) -> tuple[float, str]:
    c = geom.representative_point()
    epsg = utm_epsg(c.x, c.y)
    prob_path, src_path = paths.map_probability(epsg), paths.map_provenance(epsg)
    if not prob_path.is_file():
        return float("nan"), ""
    local = to_epsg(geom, epsg, max_segment_deg=0)
    with rasterio.open(prob_path) as src:
        try:
            win = _window(src, local)
        except rasterio.errors.WindowError:
            win = None
        if win is None:
            return float("nan"), ""
        grid = Grid(src.crs, src.window_transform(win), int(win.height), int(win.width))
        inside = polygon_mask(local, grid)
        prob = mean_inside(src.read(1, window=win).astype(np.float64), inside)
    when = ""
    if src_path.is_file():
        with rasterio.open(src_path) as src:
            when = dates_inside(src.read(1, window=win), inside, dates)
    return prob, when


def label_map_evidence(labels: gpd.GeoDataFrame, paths: RunPaths) -> pd.DataFrame:
    """Per label (EPSG:4326 frame): ``map_prob`` (mean map probability inside, NaN without a
    map there) and ``map_dates`` (acquisition dates the map used inside, "" without)."""
    dates = read_dates(paths.map_acquisitions)
    rows = [_one(g, paths, dates) for g in labels.to_crs(4326).geometry]
    return pd.DataFrame(rows, index=labels.index, columns=["map_prob", "map_dates"])
