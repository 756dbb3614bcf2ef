"""How the model's objects and the labels cover each other, in one metric CRS."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import shapely
from pyproj import CRS


def metric_crs(*frames: gpd.GeoDataFrame) -> CRS:
    """The UTM zone of the first non-empty frame (EPSG:3857 when all are empty)."""
    for frame in frames:
        if not frame.empty:
            return frame.estimate_utm_crs()
    return CRS.from_epsg(3857)


def cover(these: gpd.GeoDataFrame, those: gpd.GeoDataFrame, those_ids: pd.Series) -> pd.DataFrame:
    """For each row of ``these`` (metric CRS): the share of its area covered by ``those``
    (``covered``, 0-1), its best IoU with one of ``those`` (``best_iou``) and that one's id
    (``best_id``, "" when none overlaps). Index as ``these``."""
    rows = []
    geoms = list(those.geometry)
    tree = shapely.STRtree(geoms)
    for geom in these.geometry:
        hits = [int(i) for i in tree.query(geom, predicate="intersects")]
        area = geom.area
        if not hits or area <= 0:
            rows.append({"covered": 0.0, "best_iou": 0.0, "best_id": ""})
            continue
        union = shapely.union_all([geoms[i] for i in hits])
        ious = [
            shapely.intersection(geom, geoms[i]).area / shapely.union(geom, geoms[i]).area
            for i in hits
        ]
        best = max(range(len(hits)), key=lambda k: ious[k])
        rows.append(
            {
                "covered": min(1.0, shapely.intersection(geom, union).area / area),
                "best_iou": float(ious[best]),
                "best_id": str(those_ids.iloc[hits[best]]),
            }
        )
    return pd.DataFrame(rows, index=these.index, columns=["covered", "best_iou", "best_id"])
