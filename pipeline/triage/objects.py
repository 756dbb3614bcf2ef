"""The farms the model found, in one schema, from the map or (without a map) from predict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

ObjectSource = Literal["map", "predict"]

#: Columns of an object frame (besides ``geometry``, EPSG:4326).
OBJECT_COLUMNS: Final[tuple[str, ...]] = (
    "object_id",
    "source",
    "area_ha",
    "mean_prob",
    "max_prob",
    "dates",
    "acquisitions",
    "quicklook",
    "built",
)

#: ``built`` values: built during the map's windows, mapped since the first one, or unknown.
BUILT_NEW: Final[str] = "new"
BUILT_STANDING: Final[str] = "standing"

#: A patch's acquisition: ``(item id, ISO day)``.
Scene = tuple[str, str]


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series([""] * len(frame), index=frame.index, dtype=object)
    return frame[column].fillna("").astype(str)


def built_class(new: object, construction_window: object, first_window: str) -> str:
    """``new`` (built during the windows), ``standing`` (a farm since the first window) or
    ``""`` (no timeline, or first seen after a gap: unknown)."""
    if isinstance(new, bool | np.bool_) and bool(new):
        return BUILT_NEW
    if first_window and str(construction_window or "") == first_window:
        return BUILT_STANDING
    return ""


def _built(farms: pd.DataFrame) -> list[str]:
    """Per mapped farm, :func:`built_class` from the timeline columns (empty without them)."""
    if "new" not in farms or "construction_window" not in farms:
        return [""] * len(farms)
    # the timeline writes its per-window columns in window order, earliest first
    status = [c.removeprefix("status_") for c in farms.columns if c.startswith("status_")]
    first = status[0] if status else ""
    return [
        built_class(n, w, first)
        for n, w in zip(farms["new"], farms["construction_window"], strict=True)
    ]


def from_map(farms: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Objects from ``map/farms.gpkg`` (one per mapped farm)."""
    out = pd.DataFrame(
        {
            "object_id": farms["farm_id"].astype(str),
            "source": "map",
            "area_ha": farms["area_ha"].astype(float),
            "mean_prob": farms["mean_prob"].astype(float),
            "max_prob": farms["max_prob"].astype(float),
            "dates": _text(farms, "dates"),
            "acquisitions": _text(farms, "acquisitions"),
            "quicklook": "",
            "built": _built(farms),
        }
    )
    return gpd.GeoDataFrame(out, geometry=list(farms.geometry), crs=farms.crs).to_crs(4326)


def _groups(geoms: list[shapely.Geometry]) -> list[list[int]]:
    """Indices of ``geoms`` grouped by overlap chains (connected components)."""
    parent = list(range(len(geoms)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    tree = shapely.STRtree(geoms)
    for a, b in zip(*tree.query(geoms, predicate="intersects"), strict=True):
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    out: dict[int, list[int]] = {}
    for i in range(len(geoms)):
        out.setdefault(find(i), []).append(i)
    return sorted(out.values())


def from_predicted(
    farms: gpd.GeoDataFrame, scenes: Mapping[str, Scene] | None = None
) -> gpd.GeoDataFrame:
    """Objects from ``predict/farms.gpkg``: polygons of overlapping patches that touch are
    merged (pixel-weighted mean probability, areas of the union).

    Args:
        farms: Predicted polygons (``pred_id``, ``patch_id``, ``pixels``, ``mean_prob``,
            ``max_prob``).
        scenes: Each patch's acquisition (from ``fetch/index.gpkg``); unknown patches get
            none.
    """
    scenes = scenes or {}
    if farms.empty:
        return empty_objects()
    metric = farms.to_crs(farms.estimate_utm_crs())
    geoms = list(metric.geometry)
    rows = []
    for group in _groups(geoms):
        part = farms.iloc[group]
        weights = part["pixels"].astype(float).to_numpy() if "pixels" in part else None
        union = shapely.union_all([geoms[i] for i in group])
        seen = [scenes[p] for p in sorted(set(part["patch_id"].astype(str))) if p in scenes]
        rows.append(
            {
                "object_id": ";".join(sorted(part["pred_id"].astype(str))),
                "source": "predict",
                "area_ha": union.area / 1e4,
                "mean_prob": float(np.average(part["mean_prob"].astype(float), weights=weights)),
                "max_prob": float(part["max_prob"].astype(float).max()),
                "dates": ";".join(sorted({day for _, day in seen})),
                "acquisitions": ";".join(sorted({item for item, _ in seen})),
                "quicklook": "",
                "built": "",
                "patch_id": str(part["patch_id"].iloc[0]),
                "geometry": union,
            }
        )
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=metric.crs).to_crs(4326)
    return frame


def empty_objects() -> gpd.GeoDataFrame:
    """An object frame without rows."""
    return gpd.GeoDataFrame(
        pd.DataFrame(columns=list(OBJECT_COLUMNS)), geometry=gpd.GeoSeries([]), crs=4326
    )
